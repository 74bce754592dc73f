// ServerPolicy on gRPC's completion-queue (async) API (issue 12): the async
// API has no handler objects to wrap, so the server's request loop asks
// AdmitAsync, and the decision arrives as a tag on the server's own
// completion queue -- at once, or for a call that waits in the
// deadline-aware queue when a slot frees or its Context ends.
//
// Every policy scenario (minimum budget, shedding at arrival with pushback,
// queue full, drops at the deadline and on a client cancel, newest first,
// criticality and eviction, reply margin, default and maximum deadlines)
// runs against a real async server as PolicyServerTest.*/Async
// (tests/policy_server_test.cc, the server in tests/policy_test_server.cc).
// This file has what only the async API has: the server's shutdown while
// calls wait in the queue, and the AsyncAdmission contract itself.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/server_policy.h"
#include "proto/echo.grpc.pb.h"
#include "tests/policy_test_server.h"

namespace reqctx::policy {
namespace {

using testing::BackgroundCall;
using testing::CallEcho;
using testing::CallResult;
using testing::OneSlot;
using testing::PolicedServer;
using testing::PolicyTestServer;
using testing::PollUntil;
using testing::SleepWork;

constexpr absl::Duration kBound = testing::kPolicyWaitBound;

// A queued call is decided when the shutdown ends its Context: the loop
// answers it, the queue empties, and the server stops without waiting for
// the calls' 30 s deadlines or the busy call's 20 s of work.
TEST(ServerPolicyAsyncTest, ShutdownDecidesQueuedCalls) {
  PolicedServer served(PolicyTestServer::Api::kAsync,
                       OneSlot(8, absl::Milliseconds(1)));
  ASSERT_TRUE(served.server.ok());
  BackgroundCall busy(*served.stub, absl::Seconds(30), 20000);
  ASSERT_TRUE(served.server.WaitHandled(1, kBound));
  BackgroundCall queued(*served.stub, absl::Seconds(30), 0);
  ASSERT_TRUE(PollUntil([&] { return served.policy.Queued() == 1; }));
  const absl::Time start = absl::Now();
  served.server.Shutdown();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(served.policy.Queued(), 0);
  EXPECT_EQ(served.policy.Running(), 0);
  // Both calls end with the server: the busy one canceled, the queued one
  // dropped when its cancel is seen (or, if the busy one's slot came free
  // first, admitted with its Context already ending).
  EXPECT_FALSE(busy.Join().status.ok());
  EXPECT_FALSE(queued.Join().status.ok());
}

// Attack review (attack14): the server shuts down while a call is held in
// gRPC's second queue -- the glue's interceptor saw it (its arrival is
// measured from there) and the loop, busy with other work, has not yet
// called AdmitAsync -- with the one slot taken and more calls behind it.
// Every call ends, nothing stays held or queued, and the server stops
// without waiting for the calls' 30 s deadlines or the busy call's work.
TEST(ServerPolicyAsyncTest, ShutdownWithACallHeldBeforeItsAdmission) {
  PolicedServer served(PolicyTestServer::Api::kAsync,
                       OneSlot(8, absl::Milliseconds(1)));
  ASSERT_TRUE(served.server.ok());
  BackgroundCall busy(*served.stub, absl::Seconds(30), 20000);
  ASSERT_TRUE(served.server.WaitHandled(1, kBound));
  // The loop's next admission waits for `release` (bounded).
  std::mutex mu;
  std::condition_variable cv;
  bool entered = false, release = false;
  served.server.BeforeNextAsyncAdmit([&] {
    std::unique_lock<std::mutex> lock(mu);
    entered = true;
    cv.notify_all();
    cv.wait_for(lock, absl::ToChronoSeconds(kBound), [&] { return release; });
  });
  BackgroundCall held(*served.stub, absl::Seconds(30), 0);
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, absl::ToChronoSeconds(kBound),
                            [&] { return entered; }));
  }
  // Behind it, calls whose request tags the busy loop has not taken.
  BackgroundCall behind1(*served.stub, absl::Seconds(30), 0);
  BackgroundCall behind2(*served.stub, absl::Seconds(30), 0);
  const absl::Time start = absl::Now();
  std::thread stopper([&] { served.server.Shutdown(); });
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
    cv.notify_all();
  }
  stopper.join();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_EQ(served.policy.Queued(), 0);
  EXPECT_EQ(served.policy.Running(), 0);
  EXPECT_FALSE(busy.Join().status.ok());
  // The held call may have been admitted from the queue as the busy one's
  // slot came free, with its Context already ending: it ends either way.
  held.Join();
  EXPECT_FALSE(behind1.Join().status.ok());
  EXPECT_FALSE(behind2.Join().status.ok());
}

// The AsyncAdmission contract, driven by hand on real async calls: the
// decision is not readable before its tag, which comes through the queue;
// Done() is idempotent (the slot is given back once); the destructor gives
// back a slot that Done() was never called for.
TEST(ServerPolicyAsyncTest, AdmissionContract) {
  ServerPolicyOptions o;
  o.defaults.max_concurrency = 2;
  o.defaults.max_queue = 0;
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
  auto stub = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  // Waits (bounded) for the next event; its tag.
  auto next = [&]() -> void* {
    void* tag = nullptr;
    bool ok = false;
    const grpc::CompletionQueue::NextStatus s = cq->AsyncNext(
        &tag, &ok, std::chrono::system_clock::now() + std::chrono::seconds(20));
    EXPECT_EQ(s, grpc::CompletionQueue::GOT_EVENT);
    EXPECT_TRUE(ok);
    return tag;
  };
  struct Call {
    grpc::ServerContext ctx;
    ::echo::v1::EchoRequest request;
    grpc::ServerAsyncResponseWriter<::echo::v1::EchoResponse> responder{&ctx};
    int decision_tag = 0;
  };
  BackgroundCall first(*stub, absl::Seconds(20), 0);
  BackgroundCall second(*stub, absl::Seconds(20), 0);
  Call a, b;
  {
    AsyncAdmission forgotten;  // a's: Done() never called.
    AsyncAdmission admission;  // b's.
    EXPECT_FALSE(admission.admitted());
    EXPECT_EQ(admission.status().code(), absl::StatusCode::kFailedPrecondition);
    for (auto [call, adm] : {std::pair{&a, &forgotten}, std::pair{&b, &admission}}) {
      service.RequestEcho(&call->ctx, &call->request, &call->responder,
                          cq.get(), cq.get(), call);
      ASSERT_EQ(next(), call);
      policy.AdmitAsync("/echo.v1.Echo/Echo", &call->ctx, cq.get(),
                        &call->decision_tag, adm);
      ASSERT_EQ(next(), &call->decision_tag);  // Through the queue.
      ASSERT_TRUE(adm->admitted());
    }
    EXPECT_EQ(policy.Running(), 2);
    admission.Done();
    admission.Done();
    EXPECT_EQ(policy.Running(), 1);  // Once.
  }
  EXPECT_EQ(policy.Running(), 0);  // The forgotten one, by its destructor.
  for (Call* call : {&a, &b}) {
    call->responder.Finish(::echo::v1::EchoResponse(), grpc::Status::OK, call);
    ASSERT_EQ(next(), call);
  }
  EXPECT_TRUE(first.Join().status.ok());
  EXPECT_TRUE(second.Join().status.ok());
  EXPECT_EQ(policy.Counters()[PolicyCounter::kAdmitted], 2);
  server->Shutdown(std::chrono::system_clock::now());
  cq->Shutdown();
  void* tag;
  bool ok;
  while (cq->Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace reqctx::policy
