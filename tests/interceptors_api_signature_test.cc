// Pins the public API of //interceptors to the exact signatures other code
// relies on: if one changes, this file stops compiling.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "interceptors/interceptors.h"
#include "context/version.h"
#include "gtest/gtest.h"

namespace reqctx {
namespace {

// What version 0.1 promises (context/version.h, CHANGELOG.md): changing a
// signature pinned in this file means a new minor version and a CHANGELOG
// entry, and then this assertion too.
static_assert(REQCTX_VERSION_MAJOR == 0 && REQCTX_VERSION_MINOR == 1,
              "signatures pinned for reqctx 0.1");

static_assert(std::is_same_v<decltype(TraceContext::trace_id), TraceId>);
static_assert(std::is_same_v<decltype(TraceContext::span_id), SpanId>);
static_assert(std::is_same_v<decltype(TraceContext::sampled), bool>);
static_assert(std::is_same_v<decltype(&GetTraceContext),
                             std::optional<TraceContext> (*)(const Context&)>);
static_assert(std::is_same_v<decltype(&WithTraceContext),
                             Context (*)(const Context&, TraceContext)>);
static_assert(std::is_same_v<decltype(&ParseTraceparent),
                             std::optional<TraceContext> (*)(std::string_view)>);
static_assert(std::is_same_v<decltype(&FormatTraceparent),
                             std::string (*)(const TraceContext&)>);
static_assert(std::is_same_v<decltype(&InstallServerInterceptors),
                             void (*)(grpc::ServerBuilder&)>);
static_assert(
    std::is_same_v<decltype(&MakeServerInterceptorFactory),
                   std::unique_ptr<
                       grpc::experimental::ServerInterceptorFactoryInterface> (*)()>);
static_assert(
    std::is_same_v<decltype(&MakeClientInterceptorFactory),
                   std::unique_ptr<
                       grpc::experimental::ClientInterceptorFactoryInterface> (*)()>);
static_assert(std::is_same_v<
              decltype(&reqctx::CreateChannel),
              std::shared_ptr<grpc::Channel> (*)(
                  const std::string&,
                  const std::shared_ptr<grpc::ChannelCredentials>&,
                  const grpc::ChannelArguments&)>);
static_assert(std::is_same_v<decltype(&FromServerContext),
                             Context (*)(const grpc::ServerContextBase*)>);
static_assert(std::is_same_v<decltype(&NewClientContext),
                             std::unique_ptr<grpc::ClientContext> (*)(
                                 const Context&)>);
static_assert(std::is_same_v<decltype(&ToGrpcStatus),
                             grpc::Status (*)(const absl::Status&)>);
static_assert(std::is_same_v<decltype(&FromGrpcStatus),
                             absl::Status (*)(const grpc::Status&)>);

TEST(InterceptorsApiSignatureTest, DefaultArgumentsCompile) {
  // CreateChannel's channel arguments default to {}.
  auto channel = reqctx::CreateChannel("127.0.0.1:1",
                                       grpc::InsecureChannelCredentials());
  EXPECT_NE(channel, nullptr);
  EXPECT_TRUE(TraceContext{}.sampled);
}

}  // namespace
}  // namespace reqctx
