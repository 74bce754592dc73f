// Server side of reqctx's gRPC glue: every incoming call gets a Context.
//
// Install the interceptor on a server (InstallServerInterceptors, or add
// MakeServerInterceptorFactory() to your own interceptor list), then in a
// handler call FromServerContext(context) for the call's Context. For every
// call, unary and streaming, on the sync and the callback API:
//   * the Context has the incoming deadline (`grpc-timeout`; none if the
//     caller set none) and is done with DEADLINE_EXCEEDED when it passes;
//   * it is canceled when the client cancels, when the server shuts down
//     (grpc::Server::Shutdown(deadline) cancels in-flight calls once the
//     deadline passes) and, at the latest, when the call ends (its status is
//     sent), so nothing derived from it outlives the call;
//   * it carries the call's TraceContext: a valid incoming W3C `traceparent`
//     keeps its trace id with a fresh span id for this hop, anything else
//     starts a new trace (never failing the call); `tracestate` is passed on
//     unchanged if at most 512 bytes;
//   * in sync handlers, Current() is the call's Context for the handler's
//     duration.
// How cancellation is noticed: the callback API pushes it (POST_RECV_CLOSE).
// The sync API has no push notification in gRPC 1.51, so a shared thread
// polls IsCancelled() of running sync handlers every 5 ms; polling starts with
// the handler's first FromServerContext() call (gRPC arms the call's close
// notification just before the handler runs). A client cancel therefore
// reaches a sync handler's Context within ~5 ms.
// The completion-queue (async) API is not supported.
//
// Thread-safety: all functions are safe from any thread. FromServerContext
// may be called from any thread while the call is live (before the handler
// returns / Finish is called).
// Ownership/lifetime: the returned Context is a handle (copy it freely); it
// is canceled when the call ends, and the per-call state is freed with the
// call.
#ifndef REQCTX_INTERCEPTORS_SERVER_INTERCEPTOR_H_
#define REQCTX_INTERCEPTORS_SERVER_INTERCEPTOR_H_

#include <grpcpp/server_builder.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/server_interceptor.h>

#include <memory>

#include "context/core.h"

namespace reqctx {

// Sets `builder`'s interceptor list to reqctx's server interceptor. (To
// combine it with other interceptors, build the list yourself with
// MakeServerInterceptorFactory(): SetInterceptorCreators replaces the list.)
void InstallServerInterceptors(grpc::ServerBuilder& builder);
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerInterceptorFactory();

// The Context of the live call served under `sc`. If `sc` has no live call
// known to the interceptor (not installed, or the call has ended), returns an
// already-canceled Context, so work bound to it stops instead of running
// unbounded.
Context FromServerContext(const grpc::ServerContextBase* sc);

}  // namespace reqctx

#endif  // REQCTX_INTERCEPTORS_SERVER_INTERCEPTOR_H_
