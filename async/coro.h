// reqctx coroutines: the //async:coro surface.
//   async/task.h       Task<T>, Loop, RunSync (what runs where, lifetimes)
//   async/awaitables.h Sleep, Done (awaitables that end when a Context is done)
//   async/when_all.h   WhenAll (fan-out, canceled as a group)
// The gRPC call awaitable is async/call.h (//async:grpc_call); asio support is
// async/asio.h (//async:asio). Each header states its own contract,
// including its Thread-safety and Lifetime rules; in short, coroutines run
// on their Loop's thread, and a suspended coroutine holds only its frame.
#ifndef REQCTX_ASYNC_CORO_H_
#define REQCTX_ASYNC_CORO_H_

#include "async/awaitables.h"  // IWYU pragma: export
#include "async/task.h"        // IWYU pragma: export
#include "async/when_all.h"    // IWYU pragma: export

#endif  // REQCTX_ASYNC_CORO_H_
