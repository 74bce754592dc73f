// Test helper for issue 12's policy tests: a scriptable echo.v1.Echo
// service on the sync, the callback or the completion-queue (async) API,
// served on 127.0.0.1 with reqctx's interceptors and, optionally, a
// ServerPolicy: applied to the service's handlers (sync, callback), or asked
// by the async request loop (AdmitAsync, the decision's tag, then
// AsyncAdmission::Done when the behavior has returned).
//
// Each Echo call runs `behavior(call_index, Context, request)` (the call's
// Context from FromServerContext) and returns its status; the service counts
// handler entries and records each call's arrival (remaining deadline, trace
// ids, criticality seen in `baggage`).
//
// Thread-safety: all methods are safe from any thread. Lifetime: the server
// is shut down (in-flight calls canceled) by the destructor.
#ifndef REQCTX_TESTS_POLICY_TEST_SERVER_H_
#define REQCTX_TESTS_POLICY_TEST_SERVER_H_

#include <grpcpp/completion_queue.h>
#include <grpcpp/server.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "context/core.h"
#include "drain/shutdown_signal.h"
#include "interceptors/server_interceptor.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/server_policy.h"
#include "proto/echo.grpc.pb.h"

namespace reqctx::testing {

struct Arrival {
  int index = 0;
  absl::Time at;
  std::optional<absl::Duration> remaining;  // Of the handler's Context.
  std::string trace_id;
  std::string span_id;  // The caller's span id (from traceparent).
  std::string baggage;
  // The handler Context's criticality (from `baggage`, via the policy).
  policy::Criticality criticality = policy::Criticality::kDefault;
};

using Behavior = std::function<grpc::Status(int index, const Context& ctx,
                                            const ::echo::v1::EchoRequest&)>;

// Sleeps request.work_ms on ctx; OK unless ctx ends first.
grpc::Status SleepWork(int index, const Context& ctx,
                       const ::echo::v1::EchoRequest& request);

class PolicyTestServer {
 public:
  enum class Api { kSync, kCallback, kAsync };
  // `policy` may be null (no policy); it must outlive the server.
  PolicyTestServer(Api api, Behavior behavior,
                   policy::ServerPolicy* policy = nullptr);
  // With the glue's `rules` (no policy). If rules.shutdown is set,
  // Shutdown() goes through drain::ShutdownServer with that signal.
  PolicyTestServer(Api api, Behavior behavior, ServerCallRules rules);
  ~PolicyTestServer();

  bool ok() const { return server_ != nullptr; }
  std::string address() const;
  std::unique_ptr<::echo::v1::Echo::Stub> NewStub() const;

  int handled() const { return handled_.load(); }
  std::vector<Arrival> arrivals() const;
  // Handler calls that returned.
  int finished() const;
  // Waits (bounded by `timeout`) until `n` handlers have returned.
  bool WaitFinished(int n, absl::Duration timeout) const;
  // Waits until `n` handlers have started.
  bool WaitHandled(int n, absl::Duration timeout) const;
  void Shutdown();
  // Async API: `f` runs on the loop thread when the next request is
  // delivered, before the policy's AdmitAsync -- the application's
  // completion-queue thread busy with something else while the call waits
  // (the glue's interceptor has seen it already). Once; null: nothing.
  void BeforeNextAsyncAdmit(std::function<void()> f);

 private:
  // The constructors' common part: `rules` when no policy (null: none).
  void Start(Api api, const ServerCallRules* rules);
  class SyncImpl;
  class CallbackImpl;
  struct AsyncCall;
  grpc::Status Handle(grpc::ServerContextBase* sc,
                      const ::echo::v1::EchoRequest& request);
  // The async API: one loop thread serves every completion-queue event.
  void AsyncLoop();
  void AsyncRequestNext();
  void AsyncEvent(AsyncCall* c, bool ok);

  Behavior behavior_;
  policy::ServerPolicy* const policy_;
  std::shared_ptr<drain::ShutdownSignal> shutdown_;  // From the rules.
  std::unique_ptr<grpc::Service> service_;
  ::echo::v1::Echo::AsyncService* async_service_ = nullptr;  // In service_.
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;  // Async API only.
  std::thread loop_;                                 // Async API only.
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::atomic<int> handled_{0};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::vector<Arrival> arrivals_;  // Guarded by mu_.
  int started_ = 0;                // Guarded by mu_.
  int finished_ = 0;               // Guarded by mu_.
  int live_async_calls_ = 0;       // Guarded by mu_.
  std::function<void()> before_admit_;  // Guarded by mu_.
  std::once_flag shutdown_once_;
};

// A sync-API stub call with a deadline `timeout` from now (none if
// infinite) and optional `baggage`; returns the status and the server's
// trailing metadata value of grpc-retry-pushback-ms ("" if none).
struct CallResult {
  grpc::Status status;
  std::string pushback;
  absl::Duration elapsed;
};
CallResult CallEcho(::echo::v1::Echo::Stub& stub, absl::Duration timeout,
                    int64_t work_ms, const std::string& baggage = "");
// The same with each of `baggage` sent as a `baggage` header of its own.
CallResult CallEchoWithHeaders(::echo::v1::Echo::Stub& stub,
                               absl::Duration timeout, int64_t work_ms,
                               const std::vector<std::string>& baggage);

// CallEcho on a thread of its own, started by the constructor; Join() (or
// the destructor) waits for it. The stub must outlive it.
class BackgroundCall {
 public:
  BackgroundCall(::echo::v1::Echo::Stub& stub, absl::Duration timeout,
                 int64_t work_ms, const std::string& baggage = "");
  ~BackgroundCall();
  BackgroundCall(const BackgroundCall&) = delete;
  BackgroundCall& operator=(const BackgroundCall&) = delete;
  // Waits for the call (bounded by its own deadline, or the server's
  // behavior); its result. Once.
  CallResult Join();

 private:
  CallResult result_;
  std::thread thread_;
};

// A ServerPolicy from `options`, a PolicyTestServer on `api` with it
// applied, and a stub to that server. Check server.ok() first.
struct PolicedServer {
  PolicedServer(PolicyTestServer::Api api, policy::ServerPolicyOptions options,
                Behavior behavior = SleepWork);
  policy::ServerPolicy policy;
  PolicyTestServer server;
  std::unique_ptr<::echo::v1::Echo::Stub> stub;
};

// The fixture of the policy tests that run on every API (the test's
// parameter): Start(o) serves Echo (`behavior`) on that API under a policy
// built from `o`; then policy(), server(), stub(). Instantiate with
// INSTANTIATE_TEST_SUITE_P(Apis, T, kAllApis, ApiName).
class PolicedServerTest
    : public ::testing::TestWithParam<PolicyTestServer::Api> {
 protected:
  bool Start(policy::ServerPolicyOptions o, Behavior behavior = SleepWork) {
    served_ = std::make_unique<PolicedServer>(GetParam(), std::move(o),
                                              std::move(behavior));
    return served_->server.ok();
  }
  policy::ServerPolicy& policy() { return served_->policy; }
  PolicyTestServer& server() { return served_->server; }
  ::echo::v1::Echo::Stub& stub() { return *served_->stub; }

 private:
  std::unique_ptr<PolicedServer> served_;
};

// Sync, callback and async.
inline const auto kAllApis =
    ::testing::Values(PolicyTestServer::Api::kSync,
                      PolicyTestServer::Api::kCallback,
                      PolicyTestServer::Api::kAsync);
// "Sync", "Callback", "Async": test-name suffixes.
std::string ApiName(
    const ::testing::TestParamInfo<PolicyTestServer::Api>& info);

// One concurrency slot, a queue of `max_queue`, `expected` handling time
// assumed by the shedder, and FIFO unless told otherwise.
policy::ServerPolicyOptions OneSlot(int max_queue, absl::Duration expected);

// The bound of every wait in the policy tests (wider under sanitizers).
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr absl::Duration kPolicyWaitBound = absl::Seconds(60);
#else
inline constexpr absl::Duration kPolicyWaitBound = absl::Seconds(20);
#endif

// Waits (bounded by `bound`) until `done()` holds, polling every
// millisecond: for state with no event to wait on (a policy's slot and
// queue counts, another module's counters).
bool PollUntil(const std::function<bool()>& done,
               absl::Duration bound = kPolicyWaitBound);

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_POLICY_TEST_SERVER_H_
