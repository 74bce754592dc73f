// Forwarding header: the W3C trace code moved to the gRPC-free //w3c package
// (w3c/trace_context.h). Kept so that existing includes keep working.
#ifndef REQCTX_INTERCEPTORS_TRACE_CONTEXT_H_
#define REQCTX_INTERCEPTORS_TRACE_CONTEXT_H_

#include "w3c/trace_context.h"  // IWYU pragma: export

#endif  // REQCTX_INTERCEPTORS_TRACE_CONTEXT_H_
