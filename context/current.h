// The current thread's Context, for code that cannot take one as a parameter
// (logging hooks, callbacks from a library that does not pass one).
//
// Prefer passing a Context explicitly as the first parameter; Current() is the
// fallback. The gRPC server glue sets it for the duration of a sync handler.
//
// Thread-safety: the current context is thread-local; each thread sees only
// its own. ScopedContext must be destroyed on the thread that created it, in
// reverse order of creation (it is a scope guard, not an object to store).
#ifndef REQCTX_CONTEXT_CURRENT_H_
#define REQCTX_CONTEXT_CURRENT_H_

#include "context/core.h"

namespace reqctx {

// This thread's current Context: the innermost live ScopedContext's, or
// Background() if there is none.
Context Current();

// Makes `ctx` this thread's Current() until destruction, then restores the
// previous one.
class ScopedContext {
 public:
  explicit ScopedContext(Context ctx);
  ~ScopedContext();
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;

 private:
  Context previous_;
};

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_CURRENT_H_
