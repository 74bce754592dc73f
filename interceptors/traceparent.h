// Forwarding header: the W3C trace code moved to the gRPC-free //w3c package
// (w3c/traceparent.h). Kept so that existing includes keep working.
#ifndef REQCTX_INTERCEPTORS_TRACEPARENT_H_
#define REQCTX_INTERCEPTORS_TRACEPARENT_H_

#include "w3c/traceparent.h"  // IWYU pragma: export

#endif  // REQCTX_INTERCEPTORS_TRACEPARENT_H_
