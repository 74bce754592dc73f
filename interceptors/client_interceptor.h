// Client side of reqctx's gRPC glue: outbound calls bound to a Context.
//
//   auto channel = reqctx::CreateChannel(target, creds);   // once
//   auto stub = echo::v1::Echo::NewStub(channel);
//   std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
//   grpc::Status s = stub->Echo(cc.get(), request, &response);
//
// A call made with NewClientContext(ctx) on a channel from CreateChannel (or
// any channel with MakeClientInterceptorFactory() installed):
//   * has ctx's deadline as its gRPC deadline (sent as `grpc-timeout`, which
//     gRPC C++ rounds up: exact in ms below 1 s, to 10 ms below 10 s, to
//     100 ms below 100 s; so the next hop may see a deadline later by up to
//     that much);
//   * sends ctx's trace as W3C `traceparent` (the trace id and this hop's span
//     id; a fresh trace if ctx has none) and its `tracestate`, if any;
//   * is canceled (ClientContext::TryCancel) as soon as ctx is done;
//   * fails at once with ctx's error (CANCELLED or DEADLINE_EXCEEDED), without
//     any network traffic, if ctx is already done when the call starts;
//   * ends with DEADLINE_EXCEEDED, not CANCELLED, when ctx's deadline is what
//     ended it.
// No per-call state survives the call: the cancel registration on ctx is
// removed when the call's status is received, and the ClientContext-to-ctx
// binding is consumed when the call starts.
//
// Thread-safety: all functions are safe from any thread.
// Ownership/lifetime: the caller owns the returned ClientContext; use it for
// exactly one call and keep it alive until that call has finished (its
// status received, e.g. Finish() on streams), as gRPC requires. A ClientContext
// discarded without being used leaves a small binding behind until its
// address is reused (see internal/client_binding_registry.h).
#ifndef REQCTX_INTERCEPTORS_CLIENT_INTERCEPTOR_H_
#define REQCTX_INTERCEPTORS_CLIENT_INTERCEPTOR_H_

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>
#include <grpcpp/support/client_interceptor.h>

#include <memory>
#include <string>

#include "context/core.h"

namespace reqctx {

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeClientInterceptorFactory();

// A channel to `target` with reqctx's client interceptor installed. Call it
// qualified (reqctx::CreateChannel): with grpc:: arguments, an unqualified
// call also finds grpc::CreateChannel by argument-dependent lookup.
std::shared_ptr<grpc::Channel> CreateChannel(
    const std::string& target,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const grpc::ChannelArguments& args = {});

// A ClientContext for one outbound call bound to `ctx` (see above).
std::unique_ptr<grpc::ClientContext> NewClientContext(const Context& ctx);

}  // namespace reqctx

#endif  // REQCTX_INTERCEPTORS_CLIENT_INTERCEPTOR_H_
