// WorkGate: holds calls in a test until the test opens it (tests only).
//
// A server hook (EchoServerOptions::before_work, say) calls Wait(ctx) to
// block the call until Open() -- or until the call's Context ends, or the
// gate's bound passes -- so calls overlap, or a hop's budget runs out in its
// work, for certain however loaded the machine. The test can wait for a
// call to be held (WaitForWaiter) before it acts.
//
//   WorkGate gate(kWaitBound);
//   options.before_work = gate.Hook();   // or [&](ctx) { gate.Wait(ctx); }
//   ... start calls ...
//   ASSERT_TRUE(gate.WaitForWaiter());
//   gate.Open();
//
// Thread-safety: every method may be called from any thread at once.
// Lifetime: the gate must outlive every Wait() and every Hook() it gave.
#ifndef REQCTX_TESTS_WORK_GATE_H_
#define REQCTX_TESTS_WORK_GATE_H_

#include <condition_variable>
#include <functional>
#include <mutex>

#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx::testing {

class WorkGate {
 public:
  // Every wait is bounded by `bound` (the test's, e.g. kWaitBound).
  explicit WorkGate(absl::Duration bound) : bound_(bound) {}
  WorkGate(const WorkGate&) = delete;
  WorkGate& operator=(const WorkGate&) = delete;

  // Blocks until Open(), `ctx` ends or the bound passes, whichever is
  // first; counts this call as a waiter first.
  void Wait(const Context& ctx);
  // Wait as a hook: [this](const Context& ctx) { Wait(ctx); }.
  std::function<void(const Context&)> Hook();
  // True once some call has reached Wait(); false after the bound.
  bool WaitForWaiter();
  // Lets every held and later call through.
  void Open();

 private:
  const absl::Duration bound_;
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;    // Guarded by mu_.
  bool open_ = false;  // Guarded by mu_.
};

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_WORK_GATE_H_
