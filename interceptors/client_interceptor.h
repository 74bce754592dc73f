// Client side of reqctx's gRPC glue: outbound calls bound to a Context.
//
//   auto channel = reqctx::CreateChannel(target, creds);   // once
//   auto stub = echo::v1::Echo::NewStub(channel);
//   std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
//   grpc::Status s = stub->Echo(cc.get(), request, &response);
//
// A call made with NewClientContext(ctx) on a channel from CreateChannel (or
// any channel with MakeClientInterceptorFactory() installed):
//   * has ctx's deadline as its gRPC deadline, never a later one at the next
//     hop: gRPC sends it as `grpc-timeout`, rounded up (exact in ms below
//     1 s, to 10 ms below 10 s, to 100 ms below 100 s, then seconds,
//     minutes...), and its HPACK encoder may re-send instead an earlier
//     timeout of the same connection up to 3.09% longer; so NewClientContext
//     gives the call the largest timeout whose encoding is at most 97% of
//     ctx's time left, less 2 ms for gRPC's own ms rounding
//     (internal/grpc_timeout.h). Each hop's next hop thus gets up to 3% +
//     one unit of that table + 2 ms less than the hop has (1 s: 968 ms;
//     5 s: 4.848 s; 50 s: 48.498 s), and a chain of any length, a loop
//     included, ends by the first caller's deadline. A ctx with less than
//     ~3 ms left gives a call that fails at once with DEADLINE_EXCEEDED;
//   * sends ctx's trace as W3C `traceparent` (the trace id and this hop's span
//     id; a fresh trace if ctx has none), its `tracestate`, if any, and its
//     W3C `baggage`, if any; all three are legal gRPC header values whatever
//     a peer sent or the application stored (w3c/trace_propagation.h,
//     w3c/baggage.h);
//   * never carries a header gRPC refuses, nor more propagation headers than
//     the channel's budget (ClientInterceptorOptions below): at
//     PRE_SEND_INITIAL_METADATA the interceptor removes every metadata entry
//     whose key or (non "-bin") value gRPC would refuse -- gRPC 1.51 aborts
//     the process on one -- keeping the valid members of tracestate and
//     baggage, joins repeated tracestate / baggage entries into one each,
//     and trims them to the budget: tracestate first gets what it needs
//     (at most 512 bytes, trimmed by W3C's rules if short of room), then
//     baggage gets the rest, dropping whole members (the first ones that fit
//     are kept, the `criticality` member (kBudgetFirstBaggageKey) ahead of
//     all others, so the next hop's load shedder still reads it), never a
//     part of one. Each member or header dropped is
//     counted (w3c/header_rules.h; reqctx_dropped_headers_total{header,reason}
//     with EnableRpcMetrics). This applies to every call on the channel,
//     with or without NewClientContext;
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

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "context/core.h"

namespace reqctx {

// The outbound propagation header budget: the most bytes an outbound call's
// traceparent, tracestate and baggage entries take together, counted as
// gRPC counts its metadata limit (name + value + 32 per entry). gRPC's
// default limit at the receiving hop (GRPC_ARG_MAX_METADATA_SIZE) is 8 KiB
// for the whole header block, and a block over a peer's limit fails every
// call in flight on that HTTP/2 connection; the default leaves half of it to
// the call's own headers (:path, :authority, user-agent, grpc-timeout...:
// ~200-300 bytes) and the application's.
inline constexpr size_t kDefaultPropagationHeaderBudget = 4096;
// A traceparent entry (98 bytes) always fits in the smallest budget.
inline constexpr size_t kMinPropagationHeaderBudget = 128;
inline constexpr size_t kMaxPropagationHeaderBudget = 1 << 20;

// The baggage member kept first when the budget trims baggage: the call's
// criticality (interceptors/policy/criticality.h's kCriticalityKey), which
// the next hop's load shedder reads, wherever it stood in the list.
inline constexpr char kBudgetFirstBaggageKey[] = "criticality";

struct ClientInterceptorOptions {
  // See kDefaultPropagationHeaderBudget; in [kMinPropagationHeaderBudget,
  // kMaxPropagationHeaderBudget]. Raise it only if every peer's metadata
  // limit is raised too.
  size_t propagation_header_budget = kDefaultPropagationHeaderBudget;
};

// OK, or kInvalidArgument naming the field out of range.
absl::Status ValidateClientInterceptorOptions(
    const ClientInterceptorOptions& options);

// The client interceptor with the default options.
std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeClientInterceptorFactory();
// The same with `options`; ValidateClientInterceptorOptions' error if they
// are invalid.
absl::StatusOr<
    std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
MakeClientInterceptorFactoryWithOptions(ClientInterceptorOptions options);

// A channel to `target` with reqctx's client interceptor installed (default
// options). Call it qualified (reqctx::CreateChannel): with grpc::
// arguments, an unqualified call also finds grpc::CreateChannel by
// argument-dependent lookup.
std::shared_ptr<grpc::Channel> CreateChannel(
    const std::string& target,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const grpc::ChannelArguments& args = {});
// The same with `options`; ValidateClientInterceptorOptions' error if they
// are invalid.
absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannelWithOptions(
    const std::string& target,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    ClientInterceptorOptions options, const grpc::ChannelArguments& args = {});

// A ClientContext for one outbound call bound to `ctx` (see above).
std::unique_ptr<grpc::ClientContext> NewClientContext(const Context& ctx);

}  // namespace reqctx

#endif  // REQCTX_INTERCEPTORS_CLIENT_INTERCEPTOR_H_
