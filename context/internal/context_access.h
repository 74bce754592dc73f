// ContextAccess: lets the library's own .cc files reach a Context's node.
// Not part of the public API.
#ifndef REQCTX_CONTEXT_INTERNAL_CONTEXT_ACCESS_H_
#define REQCTX_CONTEXT_INTERNAL_CONTEXT_ACCESS_H_

#include "context/core.h"

namespace reqctx {

class ContextAccess {
 public:
  // The nearest cancelable layer of `ctx`, or nullptr if it can never be done.
  static internal::CancelNode* CancelLayer(const Context& ctx) {
    return ctx.node_ ? ctx.node_->cancel_layer() : nullptr;
  }
};

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_INTERNAL_CONTEXT_ACCESS_H_
