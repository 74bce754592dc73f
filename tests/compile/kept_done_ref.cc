// Must NOT compile: a DoneRef kept in a variable could outlive its Context.
// Keep the signal as a DoneSignal instead: `DoneSignal d = ctx.Done();`.
#include "context/context.h"

bool Misuse(const reqctx::Context& ctx) {
  auto d = ctx.Done();
  return d.IsDone();
}
