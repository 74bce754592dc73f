// Call: a unary gRPC call on the callback API, as a reqctx coroutine.
//
//   auto channel = reqctx::CreateChannel(target, creds);   // reqctx's interceptor
//   auto stub = echo::v1::Echo::NewStub(channel);
//   absl::StatusOr<echo::v1::EchoResponse> r =
//       co_await reqctx::Call(ctx, stub, &echo::v1::Echo::Stub::async::Echo, request);
//
// The call is made with reqctx::NewClientContext(ctx), so on a channel with
// reqctx's client interceptor (reqctx::CreateChannel) it carries ctx's
// deadline (grpc-timeout) and trace (traceparent), is canceled as soon as ctx
// is done, and fails at once, without network traffic, if ctx is already
// done (see interceptors/client_interceptor.h).
//
// Contract: yields the response, or the call's status mapped by
// FromGrpcStatus (CANCELLED / DEADLINE_EXCEEDED when ctx ended it; never OK).
// The coroutine suspends without blocking its Loop and resumes on it.
// Fan-out: see async/when_all.h.
//
// Thread-safety: ctx may be canceled from any thread at any time. gRPC's
// callback runs on a gRPC thread and only queues the resumption.
// Lifetime: `stub` is taken by reference: it must outlive the returned Task.
// ctx and request are copied into the task. While suspended, the task shares
// the call's state (ClientContext, request, response) with gRPC's callback.
// Destroying the suspended task cancels the call (ClientContext::TryCancel)
// and waits for gRPC's callback (it follows a cancel promptly); nothing
// resumes the task. The call's state is released on the Loop's thread, never
// on gRPC's callback thread (so a stub/channel dropped meanwhile is never
// destroyed there).
#ifndef REQCTX_ASYNC_CALL_H_
#define REQCTX_ASYNC_CALL_H_

#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <functional>
#include <memory>
#include <mutex>
#include <type_traits>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "async/awaitables.h"
#include "async/task.h"
#include "context/core.h"
#include "interceptors/client_interceptor.h"
#include "interceptors/status_mapping.h"

namespace reqctx {

namespace internal {

// Starts one callback-API call and resumes the coroutine with its status.
class GrpcCallAwaiter {
 public:
  // start(client_context, done) must start the call with `done` as its
  // callback. `keep_alive` (the request/response) lives until `done` is gone.
  using Start = absl::AnyInvocable<void(grpc::ClientContext*,
                                        std::function<void(grpc::Status)>) &&>;
  GrpcCallAwaiter(std::unique_ptr<grpc::ClientContext> client_context,
                  std::shared_ptr<void> keep_alive, Start start);
  GrpcCallAwaiter(const GrpcCallAwaiter&) = delete;
  GrpcCallAwaiter& operator=(const GrpcCallAwaiter&) = delete;
  // If the call is still running: it is canceled, and the destructor waits
  // for gRPC's callback (prompt after a cancel); it will not resume the
  // coroutine. So nothing of the call outlives the awaiter.
  ~GrpcCallAwaiter();

  bool await_ready() const noexcept { return false; }
  template <typename P>
  void await_suspend(std::coroutine_handle<P> h) {
    Arm(LoopOf(h), h);
  }
  grpc::Status await_resume();

 private:
  struct Shared {
    std::unique_ptr<grpc::ClientContext> client_context;
    std::shared_ptr<void> keep_alive;
    grpc::Status status;  // Written by gRPC's callback, before `done`.
    std::atomic<bool> started{false};
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;  // gRPC's callback has run. Guarded by mu.
  };
  // gRPC's callback: records the status, then hands its reference to the
  // shared state to the loop with the resumption, so the ClientContext is
  // never destroyed on gRPC's callback thread (destroying the last reference
  // to a grpc::Channel there breaks gRPC 1.51's callback thread pool). A
  // named type (not a lambda) so that TSan reports about gRPC handing this
  // functor to its callback thread (through gRPC core, which TSan cannot
  // see) can be suppressed by name without hiding races in what it does
  // (see tests/tsan_grpc_suppressions.cc).
  struct Done {
    mutable std::shared_ptr<Shared> shared;
    std::shared_ptr<Wakeup> wakeup;
    void operator()(grpc::Status status) const;
  };
  void Arm(const LoopRef& loop, std::coroutine_handle<> h);

  std::shared_ptr<Shared> shared_;
  std::shared_ptr<Wakeup> wakeup_;
  Start start_;
  bool resumed_ = false;
};

template <typename Request, typename Response>
struct UnaryMessages {
  Request request;
  Response response;
};

// stub.async() for a stub, or a (smart) pointer to one.
template <typename StubRef>
auto* AsyncStub(StubRef& stub) {
  if constexpr (requires { stub->async(); }) {
    return stub->async();
  } else {
    return stub.async();
  }
}

}  // namespace internal

// Makes the unary call `method` (e.g. &echo::v1::Echo::Stub::async::Echo) on
// `stub` (a Stub, Stub*, or smart pointer to one) bound to `ctx`. See above.
template <typename StubRef, typename Async, typename Request, typename Response>
Task<absl::StatusOr<Response>> Call(
    Context ctx, StubRef& stub,
    void (Async::*method)(grpc::ClientContext*, const Request*, Response*,
                          std::function<void(grpc::Status)>),
    std::type_identity_t<Request> request) {
  auto messages = std::make_shared<internal::UnaryMessages<Request, Response>>();
  messages->request = std::move(request);
  auto* async = internal::AsyncStub(stub);
  internal::GrpcCallAwaiter::Start start =
      [async, method, messages](grpc::ClientContext* cc,
                                std::function<void(grpc::Status)> done) {
        (async->*method)(cc, &messages->request, &messages->response,
                         std::move(done));
      };
  // A named awaiter, not a temporary built inside the co_await expression:
  // g++ 12 destroys some temporaries of a co_await expression twice.
  internal::GrpcCallAwaiter call(NewClientContext(ctx), messages,
                                 std::move(start));
  grpc::Status status = co_await call;
  if (!status.ok()) co_return FromGrpcStatus(status);
  co_return std::move(messages->response);
}

}  // namespace reqctx

#endif  // REQCTX_ASYNC_CALL_H_
