#include "streams/stream_guard.h"

#include <grpc/grpc.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "context/internal/clock.h"
#include "interceptors/server_interceptor.h"
#include "metrics/rpc_metrics.h"

namespace reqctx::streams {

namespace {

using internal::MonoAdd;
using internal::MonoNow;
using internal::MonoTime;
using internal::MonoUntil;
using internal::kMonoNever;

std::atomic<int64_t> g_live{0};

bool On(absl::Duration d) {
  return d > absl::ZeroDuration() && d != absl::InfiniteDuration();
}

}  // namespace

absl::Status ValidateStreamOptions(const StreamOptions& options) {
  if (options.message_wait <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "StreamOptions.message_wait must be positive (InfiniteDuration: off)");
  }
  if (options.idle <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "StreamOptions.idle must be positive (InfiniteDuration: off)");
  }
  return absl::OkStatus();
}

MethodStreamOptions::MethodStreamOptions(StreamOptions defaults)
    : defaults_(ValidateStreamOptions(defaults).ok() ? defaults
                                                     : StreamOptions{}) {}

absl::Status MethodStreamOptions::Set(std::string method,
                                      StreamOptions options) {
  absl::Status s = ValidateStreamOptions(options);
  if (!s.ok()) return s;
  methods_[std::move(method)] = options;
  return absl::OkStatus();
}

const StreamOptions& MethodStreamOptions::For(std::string_view method) const {
  auto it = methods_.find(method);
  return it == methods_.end() ? defaults_ : it->second;
}

// Shared by the guard and its AfterFuncs (which hold a reference until End
// stops them).
struct StreamGuard::State {
  bool server = false;
  grpc::ServerContextBase* sc = nullptr;
  grpc::ClientContext* cc = nullptr;
  grpc_call* client_call = nullptr;  // Set by BindClientCall, before it.
  std::atomic<bool> client_bound{false};
  std::string method;
  absl::Duration wait = absl::InfiniteDuration();
  absl::Duration idle = absl::InfiniteDuration();
  MonoTime start = 0;

  Context ctx;
  CancelCauseFunc cancel;

  // Written per message (relaxed): the timer reads them when it fires.
  std::atomic<MonoTime> last_message{0};
  std::atomic<MonoTime> read_started{0};  // 0: no read waiting.
  std::atomic<uint64_t> in{0};
  std::atomic<uint64_t> out{0};
  std::atomic<uint64_t> timer_ops{0};
  std::atomic<int> timeout{static_cast<int>(StreamTimeout::kNone)};

  std::mutex mu;
  bool ended = false;          // Guarded by mu.
  CancelFunc timer_cancel;     // Guarded by mu.
  AfterFuncHandle timer_fn;    // Guarded by mu.
  AfterFuncHandle on_done;     // Set by Init; stopped by End.
  absl::Status cut;            // Guarded by mu; set by End.
  std::atomic<bool> end_done{false};

  bool timed() const { return On(wait) || On(idle); }

  // Arms the one timer for `at`. mu held.
  void ArmLocked(const std::shared_ptr<State>& self, MonoTime at) {
    timer_fn.Stop();
    timer_cancel = CancelFunc();
    auto [tctx, tcancel] =
        WithTimeout(Background(), MonoUntil(MonoNow(), at));
    timer_cancel = std::move(tcancel);
    timer_fn = AfterFunc(tctx, [self] { self->OnTimer(self); });
    timer_ops.fetch_add(1, std::memory_order_relaxed);
  }

  void OnTimer(const std::shared_ptr<State>& self) {
    const MonoTime now = MonoNow();
    std::string cause;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (ended) return;
      const MonoTime rs = read_started.load(std::memory_order_relaxed);
      const MonoTime wait_end =
          On(wait) && rs != 0 ? MonoAdd(rs, wait) : kMonoNever;
      const MonoTime idle_end =
          On(idle) ? MonoAdd(last_message.load(std::memory_order_relaxed),
                             idle)
                   : kMonoNever;
      if (now >= wait_end) {
        timeout.store(static_cast<int>(StreamTimeout::kMessageWait));
        cause = absl::StrCat("reqctx stream message-wait timeout (",
                             absl::FormatDuration(wait),
                             ") expired: no message for ",
                             absl::FormatDuration(MonoUntil(rs, now)));
      } else if (now >= idle_end) {
        timeout.store(static_cast<int>(StreamTimeout::kIdle));
        cause = absl::StrCat("reqctx stream idle timeout (",
                             absl::FormatDuration(idle), ") expired");
      } else {
        // Nothing expired: re-arm for the earliest moment something could.
        // Without a read waiting, a read may start any time: check again
        // one message-wait from now.
        MonoTime next = std::min(wait_end, idle_end);
        if (On(wait) && rs == 0) next = std::min(next, MonoAdd(now, wait));
        ArmLocked(self, next);
        return;
      }
    }
    absl::StrAppend(&cause, " after ", in.load(), " messages received, ",
                    out.load(), " sent");
    cancel(absl::DeadlineExceededError(cause));
  }

  // context() is done: cancel the gRPC call with its status and cause.
  void CancelCall() {
    const absl::Status& err = ctx.Err();
    const absl::Status why = Cause(ctx);
    // A timeout cancels with a DEADLINE_EXCEEDED cause (Err() is then
    // CANCELLED, as Go's cancel(cause) leaves it): the peer gets the cause's
    // code, so every stream timeout reaches it as DEADLINE_EXCEEDED.
    grpc_status_code code =
        err.code() == absl::StatusCode::kDeadlineExceeded ||
                why.code() == absl::StatusCode::kDeadlineExceeded
            ? GRPC_STATUS_DEADLINE_EXCEEDED
            : GRPC_STATUS_CANCELLED;
    const std::string message(why.message());
    if (server) {
      // The peer gets the cause's code, as FinalStatus gives the handler
      // (e.g. UNAVAILABLE "server shutting down", which clients may retry).
      if (!why.ok()) code = static_cast<grpc_status_code>(why.code());
      // Not followed by sc->TryCancel(): its CANCELLED would reach the
      // client in place of this status.
      grpc_call_cancel_with_status(sc->c_call(), code, message.c_str(),
                                   nullptr);
    } else {
      if (client_bound.load(std::memory_order_acquire)) {
        grpc_call_cancel_with_status(client_call, code, message.c_str(),
                                     nullptr);
      }
      cc->TryCancel();
    }
  }
};

StreamGuard::StreamGuard(grpc::ServerContextBase* sc,
                         const StreamOptions& options, std::string_view method)
    : StreamGuard(FromServerContext(sc), sc, options, method) {}

StreamGuard::StreamGuard(const Context& parent, grpc::ServerContextBase* sc,
                         const StreamOptions& options, std::string_view method)
    : state_(std::make_shared<State>()) {
  state_->server = true;
  state_->sc = sc;
  Init(parent, options, method, true);
}

StreamGuard::StreamGuard(const Context& ctx, grpc::ClientContext* cc,
                         const StreamOptions& options, std::string_view method)
    : state_(std::make_shared<State>()) {
  state_->cc = cc;
  Init(ctx, options, method, false);
}

void StreamGuard::Init(const Context& parent, const StreamOptions& options,
                       std::string_view method, bool server) {
  State& st = *state_;
  st.method = std::string(method);
  if (On(options.message_wait)) st.wait = options.message_wait;
  if (On(options.idle)) st.idle = options.idle;
  st.start = MonoNow();
  st.last_message.store(st.start, std::memory_order_relaxed);
  auto [ctx, cancel] = WithCancelCause(parent);
  ctx_ = ctx;
  st.ctx = std::move(ctx);
  st.cancel = std::move(cancel);
  (void)server;
  g_live.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<State> self = state_;
  st.on_done = AfterFunc(st.ctx, [self] { self->CancelCall(); });
  if (st.timed()) {
    MonoTime first = kMonoNever;
    if (On(st.wait)) first = std::min(first, MonoAdd(st.start, st.wait));
    if (On(st.idle)) first = std::min(first, MonoAdd(st.start, st.idle));
    std::lock_guard<std::mutex> lock(st.mu);
    st.ArmLocked(self, first);
  }
  published_.store(true, std::memory_order_release);
}

StreamGuard::~StreamGuard() { End(); }

void StreamGuard::BindClientCall() {
  (void)Acquire();
  // Publishes again what this thread did before starting the call -- for a
  // callback reactor, the rest of its construction (the derived classes'
  // members and vtable pointer, written after the guard's constructor) --
  // to the gRPC threads whose callbacks call Acquire() first.
  published_.store(true, std::memory_order_release);
  if (state_->server || state_->client_bound.load()) return;
  state_->client_call = state_->cc->c_call();
  if (state_->client_call != nullptr) {
    state_->client_bound.store(true, std::memory_order_release);
  }
}

void StreamGuard::ReadStarted() {
  (void)Acquire();
  if (!state_->timed()) return;
  const MonoTime now = MonoNow();
  state_->read_started.store(now, std::memory_order_relaxed);
}

bool StreamGuard::ReadDone(bool ok) {
  (void)Acquire();
  State& st = *state_;
  if (st.timed()) {
    st.read_started.store(0, std::memory_order_relaxed);
    if (ok) st.last_message.store(MonoNow(), std::memory_order_relaxed);
  }
  if (!ok || ctx_.IsDone()) return false;
  st.in.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void StreamGuard::WriteStarted() {}

bool StreamGuard::WriteDone(bool ok) {
  (void)Acquire();
  State& st = *state_;
  if (ok && On(st.idle)) {
    st.last_message.store(MonoNow(), std::memory_order_relaxed);
  }
  if (!ok || ctx_.IsDone()) return false;
  st.out.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void StreamGuard::Cut(absl::Status cause) {
  (void)Acquire();
  if (cause.ok()) cause = absl::CancelledError("reqctx stream cut");
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (state_->ended) return;
  }
  state_->cancel(std::move(cause));
}

namespace {
// Why gRPC cancelled a server call whose Context did not say: its deadline
// if that has passed or is within the grpc-timeout rounding of it (1% of
// the call's time so far + 100 ms; see interceptors' incoming_deadline.h),
// else a cancel.
absl::Status CallCancelledStatus(const grpc::ServerContextBase& sc,
                                 MonoTime start) {
  const auto until = sc.deadline() - std::chrono::system_clock::now();
  const absl::Duration window =
      MonoUntil(start, MonoNow()) / 100 + absl::Milliseconds(100);
  if (until <= absl::ToChronoNanoseconds(window)) {
    return absl::DeadlineExceededError(
        "reqctx stream: the call's deadline passed");
  }
  return absl::CancelledError("reqctx stream: the call was cancelled");
}
}  // namespace

void StreamGuard::CheckCallCancelled() {
  (void)Acquire();
  State& st = *state_;
  if (!st.server) return;
  if (st.end_done.load(std::memory_order_acquire)) {
    // After End (the completion-queue API, once the done tag came): the
    // status went out as if the stream ended; say if the call did not.
    if (!st.sc->IsCancelled()) return;
    std::lock_guard<std::mutex> lock(st.mu);
    if (!st.cut.ok()) return;
    st.cut = CallCancelledStatus(*st.sc, st.start);
    const int kind =
        st.cut.code() == absl::StatusCode::kDeadlineExceeded ? 2 : 3;
    metrics::StreamMethod(true, st.method).cut[kind]->Increment();
    return;
  }
  if (ctx_.IsDone() || !st.sc->IsCancelled()) return;
  // The glue ends the call's Context within its bounds (a sync call's poll;
  // a cancel that is really the caller's deadline, at that deadline): wait
  // for it, so the status is the glue's, DEADLINE_EXCEEDED included.
  const auto until = st.sc->deadline() - std::chrono::system_clock::now();
  absl::Duration bound = absl::Milliseconds(50);
  if (until < std::chrono::seconds(2)) {
    bound = std::max(bound, absl::FromChrono(until) + absl::Milliseconds(150));
  }
  if (ctx_.Done().WaitFor(bound)) return;
  Cut(CallCancelledStatus(*st.sc, st.start));
}

absl::Status StreamGuard::status() const {
  (void)Acquire();
  State& st = *state_;
  if (st.end_done.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> lock(st.mu);
    return st.cut;
  }
  return Cause(ctx_);
}

grpc::Status StreamGuard::FinalStatus(const grpc::Status& s) const {
  absl::Status cut = status();
  if (cut.ok()) return s;
  return grpc::Status(static_cast<grpc::StatusCode>(cut.code()),
                      std::string(cut.message()));
}

StreamStats StreamGuard::stats() const {
  (void)Acquire();
  const State& st = *state_;
  StreamStats out;
  out.messages_in = st.in.load(std::memory_order_relaxed);
  out.messages_out = st.out.load(std::memory_order_relaxed);
  out.timer_ops = st.timer_ops.load(std::memory_order_relaxed);
  out.timeout = static_cast<StreamTimeout>(st.timeout.load());
  return out;
}

void StreamGuard::End() {
  (void)Acquire();
  State& st = *state_;
  CancelFunc timer_cancel;
  AfterFuncHandle timer_fn;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    if (st.ended) return;
    st.ended = true;
    timer_cancel = std::move(st.timer_cancel);
    timer_fn = std::move(st.timer_fn);
  }
  // Waits for a running OnTimer / CancelCall, so nothing touches the call
  // after End returns.
  timer_fn = AfterFuncHandle();
  st.on_done = AfterFuncHandle();
  timer_cancel = CancelFunc();
  absl::Status cut = ctx_.IsDone() ? Cause(ctx_) : absl::OkStatus();
  {
    std::lock_guard<std::mutex> lock(st.mu);
    st.cut = cut;
  }
  st.end_done.store(true, std::memory_order_release);
  st.cancel(absl::OkStatus());  // Releases context().

  const metrics::StreamMethodMetrics& m =
      metrics::StreamMethod(st.server, st.method);
  if (const uint64_t n = st.in.load(std::memory_order_relaxed)) {
    m.messages_in->Increment(static_cast<int64_t>(n));
  }
  if (const uint64_t n = st.out.load(std::memory_order_relaxed)) {
    m.messages_out->Increment(static_cast<int64_t>(n));
  }
  m.duration->ObserveDuration(MonoUntil(st.start, MonoNow()));
  if (!cut.ok()) {
    int kind = 3;  // cancelled
    switch (static_cast<StreamTimeout>(st.timeout.load())) {
      case StreamTimeout::kMessageWait:
        kind = 0;
        break;
      case StreamTimeout::kIdle:
        kind = 1;
        break;
      case StreamTimeout::kNone:
        kind = cut.code() == absl::StatusCode::kDeadlineExceeded ? 2 : 3;
        break;
    }
    m.cut[kind]->Increment();
  }
  g_live.fetch_sub(1, std::memory_order_relaxed);
}

int64_t StreamGuard::LiveForTesting() { return g_live.load(); }

}  // namespace reqctx::streams
