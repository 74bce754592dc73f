// Method labels against a hostile peer, end to end on 127.0.0.1: a client
// calls hundreds of invented method names on a real server (a generic stub,
// so gRPC answers each UNIMPLEMENTED), then a real method; the scrape over
// HTTP still has the real method's own series with the right counts, and
// the invented names are all counted under method="_unknown", on the server
// and on the client side. (Before: 130 invented names pushed the real
// method's code="OK" series into {method="_other",code="_other"}.)
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/observability.h"
#include "metrics/metrics_server.h"
#include "proto/echo.grpc.pb.h"
#include "tests/http_client.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;

constexpr absl::Duration kBound =
    reqctx::testing::PlainOrSanitized(absl::Seconds(20), absl::Seconds(60));

class EchoService final : public ::echo::v1::Echo::Service {
  grpc::Status Echo(grpc::ServerContext*, const EchoRequest* req,
                    EchoResponse* resp) override {
    resp->set_message(req->message());
    return grpc::Status::OK;
  }
};

// The same on the callback API, where gRPC hands an unregistered call to
// the interceptors under the name the client sent.
class CallbackEchoService final : public ::echo::v1::Echo::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* ctx,
                                 const EchoRequest* req,
                                 EchoResponse* resp) override {
    resp->set_message(req->message());
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// One unary call of `method` through a generic stub (any path), bounded by
// its deadline; completed on this thread's own completion queue.
grpc::Status GenericCall(grpc::GenericStub& stub, const std::string& method) {
  auto [ctx, cancel] = WithTimeout(Background(), kBound);
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  grpc::Slice empty{std::string()};
  grpc::ByteBuffer request(&empty, 1), response;
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(cc.get(), method, request, &cq);
  call->StartCall();
  grpc::Status status;
  call->Finish(&response, &status, &status);
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || tag != &status) {
    ADD_FAILURE() << "call of " << method << " did not complete";
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

TEST(MetricsMethodLabels, InventedMethodsShareOneLabelAndRealOnesKeepTheirs) {
  EnableRpcMetrics();
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
      MetricsServer::Start({});
  ASSERT_TRUE(metrics.ok()) << metrics.status();

  EchoService sync_service;
  CallbackEchoService callback_service;
  constexpr int kInvented = 150;
  for (grpc::Service* service :
       std::initializer_list<grpc::Service*>{&sync_service, &callback_service}) {
    int port = 0;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service);
    InstallServerInterceptors(builder);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    ASSERT_NE(server, nullptr);
    std::shared_ptr<grpc::Channel> channel = reqctx::CreateChannel(
        absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
    // Unknown methods of a real service and of an invented one.
    grpc::GenericStub generic(channel);
    for (int i = 0; i < kInvented; ++i) {
      for (const std::string& method :
           {absl::StrCat("/echo.v1.Echo/Nope", i),
            absl::StrCat("/bogus.Svc/M", i)}) {
        const grpc::Status s = GenericCall(generic, method);
        ASSERT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED)
            << method << ": " << s.error_message();
      }
    }
    // Then the real method, twice.
    std::unique_ptr<::echo::v1::Echo::Stub> stub =
        ::echo::v1::Echo::NewStub(channel);
    for (int i = 0; i < 2; ++i) {
      auto [ctx, cancel] = WithTimeout(Background(), kBound);
      std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
      EchoRequest req;
      req.set_message("hi");
      EchoResponse resp;
      ASSERT_TRUE(stub->Echo(cc.get(), req, &resp).ok());
    }
    server->Shutdown(std::chrono::system_clock::now());
  }
  constexpr int kServers = 2;

  absl::StatusOr<testing::HttpResponse> r =
      testing::HttpGet((*metrics)->port(), "/metrics", kBound);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::string& page = r->body;
  auto sample = [&](const std::string& series) {
    return testing::ExpositionSample(page, series);
  };
  for (const char* side : {"server", "client"}) {
    SCOPED_TRACE(side);
    // The server's family has a `cause` label too (NONE: ended normally).
    const std::string none =
        std::string_view(side) == "server" ? ",cause=\"NONE\"" : "";
    EXPECT_EQ(sample(absl::StrCat("reqctx_", side,
                                  "_handled_total{method=\"/echo.v1.Echo/Echo\","
                                  "code=\"OK\"", none, "}")),
              2 * kServers);
    EXPECT_EQ(sample(absl::StrCat("reqctx_", side,
                                  "_started_total{method=\"/echo.v1.Echo/Echo\"}")),
              2 * kServers);
    EXPECT_EQ(sample(absl::StrCat("reqctx_", side,
                                  "_handled_total{method=\"_unknown\","
                                  "code=\"UNIMPLEMENTED\"", none, "}")),
              2 * kInvented * kServers);
    EXPECT_EQ(sample(absl::StrCat("reqctx_", side,
                                  "_started_total{method=\"_unknown\"}")),
              2 * kInvented * kServers);
  }
  // (find, not HasSubstr: a failure would print the whole page.)
  EXPECT_EQ(page.find("Nope"), std::string::npos);
  EXPECT_EQ(page.find("bogus.Svc"), std::string::npos);
  EXPECT_EQ(page.find("method=\"_other\""), std::string::npos);
}

}  // namespace
}  // namespace reqctx
