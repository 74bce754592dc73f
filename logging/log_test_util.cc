#include "logging/log_test_util.h"

#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "context/core.h"
#include "interceptors/interceptors.h"
#include "logging/log_context.h"
#include "proto/echo.grpc.pb.h"
#include "w3c/trace_context.h"

namespace reqctx::logging::testing {
namespace {

class LoggingEcho final : public ::echo::v1::Echo::Service {
 public:
  explicit LoggingEcho(const std::function<void()>& log) : log_(log) {}
  grpc::Status Echo(grpc::ServerContext*, const ::echo::v1::EchoRequest*,
                    ::echo::v1::EchoResponse*) override {
    log_();
    return grpc::Status::OK;
  }

 private:
  const std::function<void()>& log_;
};

std::string RandomHex(absl::BitGen& gen, int digits) {
  std::string s;
  for (int i = 0; i < digits; ++i) {
    s.push_back("0123456789abcdef"[absl::Uniform(gen, 1, 16)]);
  }
  return s;
}

}  // namespace

absl::Status LogCall(const std::function<void()>& log, absl::Duration timeout,
                     SentCall* sent) {
  LoggingEcho service(log);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  InstallServerInterceptorsWithRules(builder, WithLogMethodRule({}));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError("cannot start the test server");
  }
  absl::BitGen gen;
  sent->trace_id = RandomHex(gen, 32);
  sent->span_id = RandomHex(gen, 16);
  sent->timeout = timeout;
  auto stub = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
      absl::StrFormat("127.0.0.1:%d", port),
      grpc::InsecureChannelCredentials()));
  auto [ctx, cancel] = WithTimeout(
      WithTraceContext(Background(), {sent->trace_id, sent->span_id, true}),
      timeout);
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  ::echo::v1::EchoRequest request;
  ::echo::v1::EchoResponse response;
  const grpc::Status s = stub->Echo(cc.get(), request, &response);
  server->Shutdown();
  server->Wait();
  return FromGrpcStatus(s);
}

std::map<std::string, std::string> ParseFields(std::string_view line) {
  const size_t at = line.find("trace_id=");
  if (at == std::string_view::npos) return {};
  static const char* const kKeys[] = {"trace_id", "span_id", "method",
                                      "budget_ms"};
  std::string_view rest = line.substr(at);
  std::map<std::string, std::string> fields;
  for (const char* key : kKeys) {
    const std::string_view token = rest.substr(0, rest.find(' '));
    const size_t eq = token.find('=');
    if (eq == std::string_view::npos || token.substr(0, eq) != key ||
        eq + 1 == token.size()) {
      return {};
    }
    fields[key] = std::string(token.substr(eq + 1));
    rest.remove_prefix(std::min(rest.size(), token.size() + 1));
  }
  return fields;
}

::testing::AssertionResult HasCallFields(std::string_view line,
                                         const SentCall& sent) {
  std::map<std::string, std::string> f = ParseFields(line);
  if (f.empty()) {
    return ::testing::AssertionFailure() << "no fields in: " << line;
  }
  const auto is_hex = [](const std::string& s, size_t n) {
    return s.size() == n &&
           s.find_first_not_of("0123456789abcdef") == std::string::npos;
  };
  int64_t budget_ms = -1;
  if (f["trace_id"] != sent.trace_id || !is_hex(f["span_id"], 16) ||
      f["span_id"] == sent.span_id || f["method"] != "/echo.v1.Echo/Echo" ||
      !absl::SimpleAtoi(f["budget_ms"], &budget_ms) || budget_ms < 0 ||
      budget_ms > absl::ToInt64Milliseconds(sent.timeout)) {
    return ::testing::AssertionFailure()
           << "want trace " << sent.trace_id << ", a new span (not "
           << sent.span_id << "), /echo.v1.Echo/Echo, budget in [0, "
           << absl::ToInt64Milliseconds(sent.timeout) << "] in: " << line;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult HasNoCallFields(std::string_view line) {
  std::map<std::string, std::string> f = ParseFields(line);
  const std::map<std::string, std::string> want = {{"trace_id", "-"},
                                                   {"span_id", "-"},
                                                   {"method", "-"},
                                                   {"budget_ms", "none"}};
  if (f != want) {
    return ::testing::AssertionFailure()
           << "want trace_id=- span_id=- method=- budget_ms=none in: "
           << line;
  }
  return ::testing::AssertionSuccess();
}

}  // namespace reqctx::logging::testing
