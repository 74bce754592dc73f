#include "tests/work_gate.h"

#include "absl/time/time.h"
#include "context/after_func.h"

namespace reqctx::testing {

void WorkGate::Wait(const Context& ctx) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++waiting_;
    cv_.notify_all();
  }
  // Wakes the wait below when the call's Context ends.
  AfterFuncHandle wake = AfterFunc(ctx, [this] {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  });
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(bound_),
               [&] { return open_ || ctx.IsDone(); });
}

std::function<void(const Context&)> WorkGate::Hook() {
  return [this](const Context& ctx) { Wait(ctx); };
}

bool WorkGate::WaitForWaiter() {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(bound_),
                      [&] { return waiting_ > 0; });
}

void WorkGate::Open() {
  std::lock_guard<std::mutex> lock(mu_);
  open_ = true;
  cv_.notify_all();
}

}  // namespace reqctx::testing
