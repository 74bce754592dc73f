#include "context/sleep.h"

namespace reqctx {

absl::Status SleepFor(const Context& ctx, absl::Duration d) {
  if (d <= absl::ZeroDuration()) return ctx.Err();
  if (ctx.Done().WaitFor(d)) return ctx.Err();
  return absl::OkStatus();
}

}  // namespace reqctx
