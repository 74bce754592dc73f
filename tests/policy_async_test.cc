// ServerPolicy on gRPC's completion-queue (async) API (issue 12): the async
// API has no handler objects to wrap, so the server's request loop asks
// AdmitAsync first; a refused call is answered without reaching the
// application's handler code.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/server_policy.h"
#include "proto/echo.grpc.pb.h"

namespace reqctx::policy {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;

constexpr char kEcho[] = "/echo.v1.Echo/Echo";

// One async Echo call's state; its address is the completion-queue tag.
struct AsyncCall {
  grpc::ServerContext ctx;
  EchoRequest request;
  grpc::ServerAsyncResponseWriter<EchoResponse> responder{&ctx};
  bool finishing = false;
};

TEST(ServerPolicyAsyncTest, AdmitAsyncRefusesBeforeTheHandler) {
  ServerPolicyOptions o;
  o.defaults.min_budget = absl::Seconds(3);
  ServerPolicy policy(o);
  ::echo::v1::Echo::AsyncService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  policy.InstallInterceptors(builder);
  std::unique_ptr<grpc::ServerCompletionQueue> cq = builder.AddCompletionQueue();
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  std::atomic<int> handled{0};
  std::thread loop([&] {
    auto request_next = [&] {
      auto* c = new AsyncCall;
      service.RequestEcho(&c->ctx, &c->request, &c->responder, cq.get(),
                          cq.get(), c);
    };
    request_next();
    void* tag;
    bool ok;
    // Ends when the queue is shut down and drained.
    while (cq->Next(&tag, &ok)) {
      auto* c = static_cast<AsyncCall*>(tag);
      if (c->finishing || !ok) {  // Finished, or the server is stopping.
        delete c;
        continue;
      }
      request_next();
      c->finishing = true;
      ServerPolicy::Admission a = policy.AdmitAsync(kEcho, c->ctx);
      if (!a.status.ok()) {
        c->responder.FinishWithError(ToGrpcStatus(a.status), c);
        continue;
      }
      ++handled;  // The application's handler.
      EchoResponse response;
      response.set_message(c->request.message());
      c->responder.Finish(response, grpc::Status::OK, c);
      policy.DoneAsync(kEcho, absl::ZeroDuration());
    }
  });

  auto stub = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  auto call = [&](absl::Duration timeout) {
    grpc::ClientContext cc;
    cc.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    EchoRequest request;
    request.set_message("async");
    EchoResponse response;
    return stub->Echo(&cc, request, &response);
  };
  grpc::Status refused = call(absl::Seconds(1));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_NE(refused.error_message().find("minimum"), std::string::npos)
      << refused.error_message();
  EXPECT_EQ(handled.load(), 0);
  grpc::Status served = call(absl::Seconds(10));
  EXPECT_TRUE(served.ok()) << served.error_message();
  EXPECT_EQ(handled.load(), 1);
  EXPECT_EQ(policy.Counters()[PolicyCounter::kMinBudgetRejected], 1);

  server->Shutdown(std::chrono::system_clock::now());
  cq->Shutdown();
  loop.join();
}

}  // namespace
}  // namespace reqctx::policy
