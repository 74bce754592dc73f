// BidiStream: a bidirectional gRPC stream (callback API) driven by a reqctx
// coroutine, bound to a Context with the message-wait and idle timeouts of
// //streams (streams/stream_guard.h: what is bound, the statuses).
//
//   reqctx::streams::StreamOptions o;
//   o.message_wait = absl::Seconds(2);       // longest wait for a reply
//   reqctx::BidiStream<Req, Resp> stream(ctx, stub,
//       &Svc::Stub::async::Chat, o, "/pkg.Svc/Chat");
//   for (const Req& r : requests) {
//     if (!co_await stream.Write(r)) break;  // cut: see Finish()
//     Resp resp;
//     if (!co_await stream.Read(&resp)) break;
//   }
//   co_await stream.WritesDone();
//   grpc::Status s = co_await stream.Finish();
//
// Contract:
//   * The call starts at the first co_await on the stream (on
//     reqctx::NewClientContext(ctx), so a channel with reqctx's client
//     interceptor carries ctx's deadline and trace; a done ctx fails it at
//     once).
//   * co_await Read(&m) yields true with the next message in m, false at
//     the end of the stream or once it is cut; co_await Write(m) yields true
//     once m is sent, false once the stream is cut; co_await WritesDone()
//     half-closes (false once cut). Each resumes the coroutine from the
//     bound reactor's OnStreamReadDone / OnStreamWriteDone (a gRPC thread
//     only queues the resumption; it runs on the coroutine's Loop).
//   * The stream is cut -- every pending Read/Write/WritesDone resumes with
//     false, promptly -- when ctx is done (cancel, deadline), when a
//     StreamOptions timeout expires (message_wait: a Read waiting that
//     long; idle: no message in either direction that long), or when the
//     server ends the call. A cut never leaves the coroutine suspended.
//   * co_await Finish() yields the call's status: the server's, or the
//     stream's own when it was cut (CANCELLED / DEADLINE_EXCEEDED with
//     Cause(context())'s message, e.g. "reqctx stream message-wait timeout
//     (200ms) expired: ..."). Call WritesDone first unless the server ends
//     the call by itself: Finish waits for the call to end (bounded by ctx
//     and the timeouts). After Finish, Read/Write/WritesDone yield false at
//     once and Finish yields the same status again.
//   * At most one Read, one Write (or WritesDone) and one Finish pending at
//     a time (a Read and a Write may be pending together, e.g. in WhenAll).
//   * Nothing here throws.
//
// Thread-safety: a BidiStream belongs to one coroutine's Loop (use it from
// that Loop's thread). ctx may be canceled from any thread at any time.
// gRPC's callbacks run on gRPC threads and only queue resumptions.
// Lifetime: `stub` is taken by reference and must outlive the stream's
// call (until Finish resumes or the stream is destroyed). Destroying the
// stream (e.g. its suspended coroutine) while the call runs cancels the call
// and waits for gRPC's OnDone (prompt after a cancel); nothing resumes the
// coroutine afterwards. The call's state (reactor, ClientContext) is
// released on the Loop's thread, never on gRPC's callback thread (releasing
// the last channel reference there breaks gRPC 1.51's callback pool) --
// unless the Loop is already gone when the call ends.
#ifndef REQCTX_ASYNC_STREAM_H_
#define REQCTX_ASYNC_STREAM_H_

#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/status.h>

#include <condition_variable>
#include <coroutine>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>

#include "async/awaitables.h"
#include "async/call.h"
#include "async/task.h"
#include "context/core.h"
#include "streams/callback.h"
#include "streams/stream_guard.h"

namespace reqctx {

namespace internal {

// The operations of a coroutine stream, each resumed at most once per start.
enum class StreamOp { kRead = 0, kWrite = 1, kFinish = 2 };

// The coroutine side of a callback-API stream: one pending resumption per
// operation, the end of the call, and the release of the call's state on the
// Loop. Not a reactor: the reactor (CoroBidiState) completes it.
// Thread-safety: Arm/Started/WaitDone on the Loop's thread; Complete and
// CallDone on gRPC threads; the rest under mu_.
class StreamResumer {
 public:
  // Loop thread: records that `op` is pending, resumed by Complete(op).
  // Returns false (do not suspend) if the call already ended.
  bool Arm(StreamOp op, const LoopRef& loop, std::coroutine_handle<> h);
  // gRPC thread: `op` ended with `ok`; queues the resumption on the Loop.
  void Complete(StreamOp op, bool ok);
  // The result of the last Complete(op) (Loop thread, after resumption).
  bool Result(StreamOp op);
  // gRPC thread, from OnDone (last use of the call): records `status`,
  // resumes a pending Finish and hands `self` (the last reference to the
  // call's state) to the Loop. Touches nothing of *this after unlocking.
  void CallDone(grpc::Status status, std::shared_ptr<void> self);
  // Loop thread, when the stream is destroyed: no resumption queued or
  // queued later runs.
  void Abandon();
  // Loop thread: waits for CallDone (after a cancel it is prompt).
  void WaitDone();
  bool done() const;
  grpc::Status status() const;
  // Loop thread: the Loop the call's state is released on.
  void SetLoop(const LoopRef& loop);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Wakeup> pending_[3];
  bool result_[3] = {false, false, false};
  LoopRef loop_;
  bool done_ = false;
  grpc::Status status_;
};

// The reactor of a BidiStream: streams' bound client reactor, reporting to
// a StreamResumer.
template <typename Request, typename Response>
class CoroBidiState
    : public streams::ClientBidiReactor<Request, Response>,
      public std::enable_shared_from_this<CoroBidiState<Request, Response>> {
 public:
  using Base = streams::ClientBidiReactor<Request, Response>;
  using StartFn = std::function<void(grpc::ClientContext*,
                                     grpc::ClientBidiReactor<Request, Response>*)>;
  CoroBidiState(const Context& ctx, const streams::StreamOptions& options,
                std::string_view method, StartFn start)
      : Base(ctx, options, method), start_(std::move(start)) {}

  StreamResumer resumer;
  Response read_buffer;
  Request write_buffer;
  bool started = false;   // Loop thread only.
  bool holding = false;   // Loop thread only: our hold on OnDone.
  bool finishing = false; // Loop thread only: Finish was awaited.

  // Loop thread: starts the call, once; holds OnDone until Finish or the
  // stream's destruction (so operations never race OnDone).
  void StartOnce(const LoopRef& loop) {
    if (started) return;
    started = true;
    resumer.SetLoop(loop);
    self_ = this->shared_from_this();
    start_(this->client_context(), this);  // Binds the reactor first.
    this->AddHold();
    holding = true;
    this->StartCall();
  }
  void ReleaseHold() {
    if (!holding) return;
    holding = false;
    this->RemoveHold();
  }
  void Cancel() { this->client_context()->TryCancel(); }

 private:
  void OnStreamReadDone(bool ok) override {
    resumer.Complete(StreamOp::kRead, ok);
  }
  void OnStreamWriteDone(bool ok) override {
    resumer.Complete(StreamOp::kWrite, ok);
  }
  void OnWritesDoneDone(bool ok) override {
    resumer.Complete(StreamOp::kWrite,
                     ok && this->guard().status().ok());
  }
  void OnStreamDone(const grpc::Status& s) override {
    std::shared_ptr<void> self = std::move(self_);
    resumer.CallDone(s, std::move(self));
  }

  StartFn start_;
  std::shared_ptr<CoroBidiState> self_;  // Set while the call runs.
};

}  // namespace internal

template <typename Request, typename Response>
class BidiStream {
  using State = internal::CoroBidiState<Request, Response>;

 public:
  // A stream of `method` (e.g. &Svc::Stub::async::Chat) on `stub` (a Stub,
  // Stub*, or smart pointer to one), bound to `ctx` with `options` (must be
  // valid: streams::ValidateStreamOptions); `method_name`
  // ("/pkg.Svc/Chat") labels the stream metrics. Starts nothing yet.
  template <typename StubRef, typename Async>
  BidiStream(Context ctx, StubRef& stub,
             void (Async::*method)(grpc::ClientContext*,
                                   grpc::ClientBidiReactor<Request, Response>*),
             const streams::StreamOptions& options = {},
             std::string_view method_name = {}) {
    auto* async = internal::AsyncStub(stub);
    state_ = std::make_shared<State>(
        ctx, options, method_name,
        [async, method](grpc::ClientContext* cc,
                        grpc::ClientBidiReactor<Request, Response>* r) {
          (async->*method)(cc, r);
        });
  }
  BidiStream(const BidiStream&) = delete;
  BidiStream& operator=(const BidiStream&) = delete;
  // If the call runs: cancels it and waits for gRPC's OnDone (see Lifetime).
  ~BidiStream() {
    if (!state_->started) return;
    state_->resumer.Abandon();
    if (state_->resumer.done()) return;
    state_->Cancel();
    state_->ReleaseHold();
    state_->resumer.WaitDone();
  }

  // The stream's Context (done once the stream is cut or over).
  const Context& context() const { return state_->context(); }
  // The guard's counters (messages, timer operations, which timeout fired).
  streams::StreamStats stats() const { return state_->guard().stats(); }

  class [[nodiscard]] OpAwaiter {
   public:
    bool await_ready() const noexcept { return immediate_.has_value(); }
    template <typename P>
    bool await_suspend(std::coroutine_handle<P> h) {
      return Suspend(internal::LoopOf(h), h);
    }
    bool await_resume() {
      if (immediate_.has_value()) return *immediate_;
      bool ok = state_->resumer.Result(op_);
      if (ok && msg_ != nullptr) *msg_ = std::move(state_->read_buffer);
      return ok;
    }

   private:
    friend class BidiStream;
    enum class Kind { kRead, kWrite, kWritesDone };
    OpAwaiter(State* state, Kind kind, Response* msg)
        : state_(state), kind_(kind),
          op_(kind == Kind::kRead ? internal::StreamOp::kRead
                                  : internal::StreamOp::kWrite),
          msg_(msg) {
      if (state_->finishing || state_->resumer.done()) immediate_ = false;
    }
    bool Suspend(const internal::LoopRef& loop, std::coroutine_handle<> h) {
      state_->StartOnce(loop);
      if (!state_->resumer.Arm(op_, loop, h)) {
        immediate_ = false;
        return false;
      }
      switch (kind_) {
        case Kind::kRead: state_->StartRead(&state_->read_buffer); break;
        case Kind::kWrite: state_->StartWrite(&state_->write_buffer); break;
        case Kind::kWritesDone: state_->StartWritesDone(); break;
      }
      return true;
    }
    State* state_;
    Kind kind_;
    internal::StreamOp op_;
    Response* msg_;
    std::optional<bool> immediate_;
  };

  class [[nodiscard]] FinishAwaiter {
   public:
    bool await_ready() const noexcept { return false; }
    template <typename P>
    bool await_suspend(std::coroutine_handle<P> h) {
      const internal::LoopRef& loop = internal::LoopOf(h);
      state_->StartOnce(loop);
      state_->finishing = true;
      if (!state_->resumer.Arm(internal::StreamOp::kFinish, loop, h)) {
        return false;
      }
      state_->ReleaseHold();
      return true;
    }
    grpc::Status await_resume() { return state_->resumer.status(); }

   private:
    friend class BidiStream;
    explicit FinishAwaiter(State* state) : state_(state) {}
    State* state_;
  };

  // co_await yields true with the next message in *msg (left unchanged
  // otherwise), false at the stream's end or once it is cut. `msg` must stay
  // valid until the co_await resumes.
  OpAwaiter Read(Response* msg) {
    return OpAwaiter(state_.get(), OpAwaiter::Kind::kRead, msg);
  }
  // co_await yields true once `msg` is sent (copied into the stream first),
  // false once the stream is cut.
  OpAwaiter Write(Request msg) {
    OpAwaiter a(state_.get(), OpAwaiter::Kind::kWrite, nullptr);
    if (!a.await_ready()) state_->write_buffer = std::move(msg);
    return a;
  }
  // co_await half-closes the stream: true once done, false once cut.
  OpAwaiter WritesDone() {
    return OpAwaiter(state_.get(), OpAwaiter::Kind::kWritesDone, nullptr);
  }
  // co_await waits for the call's end and yields its status (see above).
  FinishAwaiter Finish() { return FinishAwaiter(state_.get()); }

 private:
  std::shared_ptr<State> state_;
};

}  // namespace reqctx

#endif  // REQCTX_ASYNC_STREAM_H_
