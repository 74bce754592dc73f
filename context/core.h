// reqctx core: Context, its constructors, keys and done signals.
//
// This is Go 1.21's `context` package in C++. A Context carries a
// cancellation signal, an optional deadline and request-scoped values across
// API boundaries and threads. Contexts form a tree: each With* call derives a
// child from a parent; canceling a context cancels all of its descendants,
// synchronously, before the cancel call returns.
//
// Rules (as in Go):
//   * A Context is the first parameter of a function that needs one. Do not
//     store it in long-lived objects; pass it along the call.
//   * Values carry request-scoped data only (trace ids, auth), never optional
//     parameters.
//   * Pass TODO() when unsure which Context to use, never a made-up one.
//   * Keep the CancelFunc and call (or drop) it when the work is done:
//     dropping the last copy cancels the context and frees its resources.
//
// Thread-safety: every function and method here is safe to call from any
// number of threads at once. Context, DoneSignal, CancelFunc and
// CancelCauseFunc are cheap copyable handles (one pointer); copies share the
// same underlying context.
//
// Lifetime: a handle keeps its context and all of its ancestors alive. A
// context is released when its last handle (Context, DoneSignal, CancelFunc)
// is gone. Key<T> objects must outlive every context that uses them (declare
// them at namespace scope).
//
// Cancellation never throws, whatever the depth of the tree or the state of
// the system (thread or memory limits), and when a cancel call returns every
// descendant is done.
//
// Memory ordering: everything a thread did before canceling a context
// happens-before whatever another thread does after it observed the context
// done (IsDone(), Err(), a Wait that returned true, an AfterFunc running).
//
// Errors: Err() is OK while the context is live, then kCancelled "context
// canceled" or kDeadlineExceeded "context deadline exceeded", and never
// changes once set.
#ifndef REQCTX_CONTEXT_CORE_H_
#define REQCTX_CONTEXT_CORE_H_

#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/internal/node.h"

namespace reqctx {

class CancelFunc;
class CancelCauseFunc;

// A key for Context values. Keys compare by identity (address), so two keys
// with the same debug name are distinct; declare each key once, at namespace
// scope, e.g. `inline constexpr Key<std::string> kUserKey("user");`.
// The debug name only appears in Context::DebugString().
template <typename T>
class Key : public internal::KeyBase {
 public:
  explicit constexpr Key(std::string_view debug_name)
      : internal::KeyBase(debug_name) {}
};

class DoneRef;

// Observes whether a context is done (Go's <-ctx.Done()). A handle that owns
// what it observes: a signal taken before the cancel still observes it, and
// it may outlive the Context it came from. Signals of contexts that can never
// be done (Background, TODO, WithoutCancel chains) hold nothing. Copying one
// updates a reference count; to poll, prefer ctx.IsDone() or
// ctx.Done().IsDone(), which write nothing.
class DoneSignal {
 public:
  DoneSignal() = default;  // Never done.

  // True once the context is done. One atomic load; writes nothing.
  bool IsDone() const { return node_ && node_->IsDone(); }
  // False if the context can never be done (nothing can cancel it).
  bool CanBeDone() const { return static_cast<bool>(node_); }
  // Blocks until done. On a context that can never be done, blocks forever.
  void Wait() const;
  // Blocks until done or `timeout` elapses; returns IsDone(). Never blocks
  // for timeout <= 0. On a never-done context, sleeps the whole timeout and
  // returns false.
  bool WaitFor(absl::Duration timeout) const;
  // Like WaitFor, until the absolute time `deadline`, which is converted to
  // the monotonic clock once, at the call (a clock step during the wait does
  // not move its end).
  bool WaitUntil(absl::Time deadline) const;

 private:
  friend class DoneRef;
  friend class ContextAccess;
  explicit DoneSignal(internal::NodeRef<internal::CancelNode> node)
      : node_(std::move(node)) {}
  internal::NodeRef<internal::CancelNode> node_;
};

// What Context::Done() returns: the context's done signal, not owned, for use
// within the expression that called Done() -- `ctx.Done().IsDone()`,
// `ctx.Done().WaitFor(t)` -- at the cost of plain loads (no reference count
// is touched, so any number of threads may poll one context without sharing
// a written cache line). To keep the signal, convert it: `DoneSignal d =
// ctx.Done();` takes a reference. The members can only be called on the
// temporary itself, so a DoneRef cannot be kept past the Context by mistake:
// `auto d = ctx.Done(); d.IsDone();` does not compile (write DoneSignal).
class DoneRef {
 public:
  DoneRef(const DoneRef&) = delete;
  DoneRef& operator=(const DoneRef&) = delete;

  // As DoneSignal's members of the same names.
  bool IsDone() const&& { return node_ != nullptr && node_->IsDone(); }
  bool CanBeDone() const&& { return node_ != nullptr; }
  void Wait() const&&;
  bool WaitFor(absl::Duration timeout) const&&;
  bool WaitUntil(absl::Time deadline) const&&;
  // An owning DoneSignal for the same context (one reference count update).
  operator DoneSignal() const&&;  // NOLINT: implicit by design.

 private:
  friend class Context;
  explicit DoneRef(internal::CancelNode* node) : node_(node) {}
  internal::CancelNode* const node_;
};

// A request-scoped context: cancellation, deadline, values. Immutable; derive
// new ones with the With* functions. Default-constructed == Background().
class Context {
 public:
  Context() = default;

  // The time at which this context will be canceled with
  // kDeadlineExceeded: the earliest deadline along its chain, nullopt if none.
  std::optional<absl::Time> Deadline() const;
  // How long until that deadline, on the monotonic clock it fires by; nullopt
  // if there is none, zero or negative once it has passed. To pass a
  // deadline on (as a relative timeout, e.g. gRPC's grpc-timeout), prefer
  // this to Deadline() - Now(): a step of the system clock does not move it.
  std::optional<absl::Duration> TimeLeft() const;
  // True once this context is done (Go's `select { case <-ctx.Done(): }`
  // without blocking). One or two dependent loads and no store: any number
  // of threads may poll one context at once without contention.
  bool IsDone() const {
    internal::CancelNode* c = node_ ? node_->cancel_layer() : nullptr;
    return c != nullptr && c->IsDone();
  }
  // A signal that fires when this context is done (see DoneRef: use it in
  // the same expression, or store it as a DoneSignal). Allocates nothing.
  DoneRef Done() const {
    return DoneRef(node_ ? node_->cancel_layer() : nullptr);
  }
  // OK while live; then kCancelled "context canceled" or kDeadlineExceeded
  // "context deadline exceeded"; never changes once non-OK. A reference to a
  // process-wide status that outlives every context and is valid before
  // main and after it returns: reading it is two or three dependent loads
  // and writes nothing (copy it, `absl::Status s = ctx.Err();`, to keep it).
  const absl::Status& Err() const {
    internal::CancelNode* c = node_ ? node_->cancel_layer() : nullptr;
    return internal::ErrStatus(c == nullptr ? internal::DoneReason::kNotDone
                                            : c->reason());
  }
  // The value stored under `key` by the nearest ancestor (or this context),
  // or nullptr. The pointer is valid while this Context (or any context
  // derived from it) is alive. Values survive cancellation.
  template <typename T>
  const T* Value(const Key<T>& key) const;
  // Describes the chain, like Go's String(): "context.Background.WithCancel"
  // ... Value layers show the key's debug name, never the value.
  std::string DebugString() const;

 private:
  friend Context TODO();
  friend Context WithoutCancel(const Context&);
  friend absl::Status Cause(const Context&);
  friend std::pair<Context, CancelFunc> WithCancel(const Context&);
  friend std::pair<Context, CancelCauseFunc> WithCancelCause(
      const Context&);
  friend std::pair<Context, CancelFunc> WithDeadlineCause(const Context&,
                                                          absl::Time,
                                                          absl::Status);
  template <typename T>
  friend Context WithValue(const Context&, const Key<T>&, T);
  friend class ContextAccess;

  explicit Context(internal::NodeRef<internal::Node> node)
      : node_(std::move(node)) {}
  internal::NodeRef<internal::Node> node_;  // Null: Background.
};

// Cancels its context (without a cause). Copyable; calling any copy, any
// number of times, from any thread, is safe: the first call wins. When the
// last copy is destroyed the context is canceled, so keep it while the work
// runs: `auto [ctx, cancel] = WithCancel(parent);`.
class CancelFunc {
 public:
  CancelFunc() = default;  // Cancels nothing.
  CancelFunc(const CancelFunc& other);
  CancelFunc(CancelFunc&& other) noexcept = default;
  CancelFunc& operator=(const CancelFunc& other);
  CancelFunc& operator=(CancelFunc&& other) noexcept;
  ~CancelFunc();

  void operator()() const;

 private:
  friend std::pair<Context, CancelFunc> WithCancel(const Context&);
  friend std::pair<Context, CancelFunc> WithDeadlineCause(const Context&,
                                                          absl::Time,
                                                          absl::Status);
  friend class CancelCauseFunc;
  friend class ContextAccess;
  explicit CancelFunc(internal::NodeRef<internal::CancelNode> node)
      : node_(std::move(node)) {}
  internal::NodeRef<internal::CancelNode> node_;
};

// Like CancelFunc, but records a cause, returned by Cause(ctx). A cause of
// OK means "no cause": Cause(ctx) == ctx.Err(). The first call's cause wins.
class CancelCauseFunc {
 public:
  CancelCauseFunc() = default;  // Cancels nothing.

  void operator()(absl::Status cause) const;

 private:
  friend std::pair<Context, CancelCauseFunc> WithCancelCause(const Context&);
  explicit CancelCauseFunc(CancelFunc owner) : owner_(std::move(owner)) {}
  CancelFunc owner_;  // Shares the canceler count: drop the last -> cancel.
};

// The root of every tree: never canceled, no deadline, no values. Use it in
// main, in tests and for the top-level request.
Context Background();
// Like Background, but says "the right Context is not known yet".
Context TODO();

// A child of `parent` that is done when the returned CancelFunc is called,
// its last copy dropped, or `parent` is done (whichever happens first). If
// `parent` is already done, so is the child.
std::pair<Context, CancelFunc> WithCancel(const Context& parent);
// Like WithCancel, but the cancel function records a cause.
std::pair<Context, CancelCauseFunc> WithCancelCause(const Context& parent);
// A child whose deadline is the earlier of `d` and the parent's deadline; it
// is done with kDeadlineExceeded when that deadline passes (at once if it
// already has). As Go's WithDeadline, `d` is turned into a time on the
// monotonic clock once, here (the time left until `d` now): the deadline then
// fires by the monotonic clock, so a later step of the system clock neither
// delays nor hurries it; Deadline() keeps reporting `d`. Uses the shared timer
// service: no thread per context; the timer is removed as soon as the context
// is done. InfiniteFuture means no deadline of its own (like WithCancel);
// InfinitePast is already expired. Throws std::bad_alloc only when memory
// for the timer cannot be had (leaving nothing behind).
std::pair<Context, CancelFunc> WithDeadline(const Context& parent,
                                            absl::Time d);
// A child that is done with kDeadlineExceeded `t` from now, measured on the
// monotonic clock (Go's WithTimeout); Deadline() reports Now() + t.
// t <= 0: done at creation; InfiniteDuration: no deadline of its own.
std::pair<Context, CancelFunc> WithTimeout(const Context& parent,
                                           absl::Duration t);
// Like WithDeadline, but when the deadline passes Cause(ctx) is `cause` (OK:
// no cause). A cancel through the CancelFunc has no cause.
std::pair<Context, CancelFunc> WithDeadlineCause(const Context& parent,
                                                 absl::Time d,
                                                 absl::Status cause);
std::pair<Context, CancelFunc> WithTimeoutCause(const Context& parent,
                                                absl::Duration t,
                                                absl::Status cause);
// A child carrying `value` under `key`, visible through every context derived
// from it. For request-scoped data only. Allocates one node; no lock.
template <typename T>
Context WithValue(const Context& parent, const Key<T>& key, T value);
// A child with the parent's values but that is never done and has no
// deadline (for work that must outlive the request, e.g. an audit write).
Context WithoutCancel(const Context& parent);
// Why `ctx` is done: the cause given to a CancelCauseFunc or a *Cause
// constructor of it or an ancestor, else ctx.Err(); OK while live. Contexts
// under WithoutCancel report OK.
absl::Status Cause(const Context& ctx);

// ---------------------------------------------------------------------------
// Implementation details.

template <typename T>
const T* Context::Value(const Key<T>& key) const {
  const internal::ValueNodeBase* n = internal::FindValue(node_.get(), &key);
  return n == nullptr ? nullptr
                      : &static_cast<const internal::ValueNode<T>*>(n)->value();
}

template <typename T>
Context WithValue(const Context& parent, const Key<T>& key, T value) {
  return Context(internal::NodeRef<internal::Node>::Adopt(
      new internal::ValueNode<T>(parent.node_.get(), &key, std::move(value))));
}

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_CORE_H_
