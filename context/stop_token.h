// std::stop_token bridges, both ways.
//
//   // A Context's cancellation as a stop_token (std::jthread,
//   // std::condition_variable_any::wait(lock, token, pred), any library that
//   // takes a stop_token):
//   std::condition_variable_any cv;
//   cv.wait(lock, StopTokenOf(ctx), [&] { return ready; });
//
//   // A stop_token's stop request as a Context cancel:
//   std::jthread worker([parent](std::stop_token st) {
//     auto [ctx, cancel] = WithStopToken(parent, st);
//     Serve(ctx);  // Ends when the jthread is asked to stop, or parent is done.
//   });
//
// Thread-safety: both functions may be called from any thread.
// Lifetime: see each function. Neither creates a thread; stop callbacks
// registered on a StopTokenOf token run on the AfterFunc executor (the
// cancel may not run foreign code under the context's lock).
#ifndef REQCTX_CONTEXT_STOP_TOKEN_H_
#define REQCTX_CONTEXT_STOP_TOKEN_H_

#include <stop_token>
#include <utility>

#include "context/core.h"

namespace reqctx {

// A stop_token that is stop-requested once `ctx` is done (at once if it
// already is; the request, and the stop_callbacks it runs, happen on an
// AfterFunc executor thread soon after the cancel). For a context that can
// never be done, a token with stop_possible() == false. Each call registers
// one small listener with the context, released when the context is done --
// at the latest when its CancelFunc is called or dropped -- so call it once
// per operation, not in a loop over a long-lived context.
std::stop_token StopTokenOf(const Context& ctx);

// A child of `parent` (as WithCancel) that is also canceled when `token` is
// stop-requested; Err() is then kCancelled and Cause() is kCancelled
// "stop requested". If the token is already stop-requested the child is done
// at once; a token with stop_possible() == false adds nothing. The
// registration on the token (a std::stop_callback) is removed when the child
// is done, so call or drop the CancelFunc when the work ends, as always.
std::pair<Context, CancelFunc> WithStopToken(const Context& parent,
                                             std::stop_token token);

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_STOP_TOKEN_H_
