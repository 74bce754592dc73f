// reqctx's gRPC glue: Go-style request contexts for C++ gRPC services.
//
// Each incoming call's deadline, cancellation and W3C trace context become a
// reqctx::Context for the handler and its workers; each outbound call made
// with NewClientContext(ctx) carries them on (deadline as `grpc-timeout`,
// trace as `traceparent`/`tracestate`), so deadlines shrink hop by hop,
// cancellation reaches every hop and one trace id spans the chain. Only
// standard metadata crosses the wire, so peers in any language interoperate.
//
// This umbrella header is the public surface; each part states its contract:
//   w3c/trace_context.h                TraceContext, traceparent parse/format
//   w3c/baggage_context.h              W3C baggage as Context values
//   interceptors/observability.h       metrics, orphan reports, call log
//   interceptors/server_interceptor.h  InstallServerInterceptors,
//                                      FromServerContext
//   interceptors/client_interceptor.h  CreateChannel, NewClientContext
//   interceptors/status_mapping.h      absl::Status <-> grpc::Status
//   interceptors/debug.h               counts for leak checks (tests)
// Everything is safe to call from any thread.
#ifndef REQCTX_INTERCEPTORS_INTERCEPTORS_H_
#define REQCTX_INTERCEPTORS_INTERCEPTORS_H_

#include "interceptors/client_interceptor.h"  // IWYU pragma: export
#include "interceptors/observability.h"       // IWYU pragma: export
#include "interceptors/server_interceptor.h"  // IWYU pragma: export
#include "interceptors/status_mapping.h"      // IWYU pragma: export
#include "w3c/baggage_context.h"              // IWYU pragma: export
#include "w3c/trace_context.h"                // IWYU pragma: export

#endif  // REQCTX_INTERCEPTORS_INTERCEPTORS_H_
