// docs/guide.md "The guide as one program": a cancel with a cause, waiting,
// AfterFunc, WithoutCancel and Current(). Compiled and run by CI.
#include <cstdio>
#include <optional>

#include "context/context.h"  // namespace reqctx; build dep: //context

int main() {
  // A request canceled with a reason, and a call with a deadline inside it.
  auto [req, cancel_req] = reqctx::WithCancelCause(reqctx::Background());
  auto [call, cancel_call] = reqctx::WithTimeout(req, absl::Seconds(5));
  std::optional<absl::Duration> left = call.TimeLeft();  // about 5 s

  // AfterFunc runs once `call` is done, on another thread. Keep the handle:
  // dropping it stops the function. Here it cancels `released`.
  auto [released, mark_released] = reqctx::WithCancel(reqctx::Background());
  reqctx::AfterFuncHandle on_done =
      reqctx::AfterFunc(call, [mark = mark_released] { mark(); });

  // Follow-up work keeps the request's values but not its cancellation.
  reqctx::Context audit = reqctx::WithoutCancel(call);

  cancel_req(absl::UnavailableError("client went away"));  // first cause wins
  bool call_done = call.Done().WaitFor(absl::Seconds(1));  // true at once
  absl::Status slept = reqctx::SleepFor(call, absl::Seconds(10));  // no sleep: done
  bool after_func_ran = released.Done().WaitFor(absl::Seconds(10));

  {
    reqctx::ScopedContext scope(call);  // for code that cannot take a parameter
    std::printf("Current(): %s\n", reqctx::Current().Err().ToString().c_str());
  }
  std::printf("time left before: %s\n", absl::FormatDuration(left.value_or(absl::ZeroDuration())).c_str());
  std::printf("Err: %s\nCause: %s\n", call.Err().ToString().c_str(),
              reqctx::Cause(call).ToString().c_str());
  std::printf("SleepFor: %s\naudit done: %s\n", slept.ToString().c_str(),
              audit.IsDone() ? "yes" : "no");
  bool ok = call_done && after_func_ran && slept.code() == absl::StatusCode::kCancelled &&
            reqctx::Cause(call).code() == absl::StatusCode::kUnavailable && !audit.IsDone() &&
            !audit.Deadline().has_value();
  return ok ? 0 : 1;
}
