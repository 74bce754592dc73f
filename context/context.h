// reqctx: Go's context package for C++ (request-scoped cancellation,
// deadlines and values), with Go 1.21 semantics point by point.
//
// This umbrella header is the library's public surface:
//   context/core.h        Context, Key, DoneSignal, CancelFunc, With*, Cause
//   context/after_func.h  AfterFunc, AfterFuncHandle
//   context/sleep.h       SleepFor
//   context/current.h     Current, ScopedContext
//   context/group.h       Group (errgroup)
//   context/waitable.h    DoneFd (a Context as a pollable descriptor)
//   context/select.h      Select (first of several done), Wait (condvar)
//   context/stop_token.h  StopTokenOf, WithStopToken (std::stop_token)
// Each header states its own contract. In short: every function is
// thread-safe; handles are cheap to copy and keep what they refer to alive;
// nothing here creates a thread per context, deadline or waiter (a shared
// timer service, one heap and thread per CPU, serves all deadlines; its
// threads start lazily and stop at exit).
//
// The //context target has no gRPC dependency; //interceptors adds the glue.
#ifndef REQCTX_CONTEXT_CONTEXT_H_
#define REQCTX_CONTEXT_CONTEXT_H_

#include "context/after_func.h"  // IWYU pragma: export
#include "context/core.h"        // IWYU pragma: export
#include "context/current.h"     // IWYU pragma: export
#include "context/group.h"       // IWYU pragma: export
#include "context/orphans.h"     // IWYU pragma: export
#include "context/select.h"      // IWYU pragma: export
#include "context/sleep.h"       // IWYU pragma: export
#include "context/stop_token.h"  // IWYU pragma: export
#include "context/waitable.h"    // IWYU pragma: export

#endif  // REQCTX_CONTEXT_CONTEXT_H_
