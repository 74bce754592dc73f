// Status conversion between abseil and gRPC.
//
// absl::StatusCode and grpc::StatusCode name the same 17 canonical codes
// (OK .. UNAUTHENTICATED); each maps to its namesake and back, and the message
// is kept verbatim. A code outside that set (possible only by casting an int)
// becomes UNKNOWN, keeping the message. Error details/payloads are not carried.
//
// Thread-safety: pure functions. No ownership concerns (values in, values out).
#ifndef REQCTX_INTERCEPTORS_STATUS_MAPPING_H_
#define REQCTX_INTERCEPTORS_STATUS_MAPPING_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "context/core.h"

namespace reqctx {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// The status of a call that `ctx` ended (ctx must be done): ctx.Err()'s
// code, and a message naming Cause(ctx) when it is one of ledger/causes.h
// (CauseDescription: "canceled: server shutting down", "deadline exceeded:
// caller's deadline"), else Err()'s message. What reqctx's client glue
// answers for an outbound call its Context ended (as Go's context.Cause
// lets a Go service say why); allocates only for a cause's message.
grpc::Status ContextEndStatus(const Context& ctx);

}  // namespace reqctx

#endif  // REQCTX_INTERCEPTORS_STATUS_MAPPING_H_
