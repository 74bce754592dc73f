// Must NOT compile with -Werror=unused-result: the Go-style statement
// `AfterFunc(ctx, f);` drops the handle, which stops f at once.
#include "context/context.h"

void Misuse(const reqctx::Context& ctx) {
  reqctx::AfterFunc(ctx, [] {});
}
