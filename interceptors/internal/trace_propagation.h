// Forwarding header: trace propagation moved to the gRPC-free //w3c package
// (w3c/trace_propagation.h). Kept so that existing includes keep working.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_TRACE_PROPAGATION_H_
#define REQCTX_INTERCEPTORS_INTERNAL_TRACE_PROPAGATION_H_

#include "w3c/trace_propagation.h"  // IWYU pragma: export

#endif  // REQCTX_INTERCEPTORS_INTERNAL_TRACE_PROPAGATION_H_
