// ContextAccess: lets the library's own .cc files reach a Context's node.
// Not part of the public API.
#ifndef REQCTX_CONTEXT_INTERNAL_CONTEXT_ACCESS_H_
#define REQCTX_CONTEXT_INTERNAL_CONTEXT_ACCESS_H_

#include <utility>

#include "context/core.h"

namespace reqctx {

class ContextAccess {
 public:
  // The nearest cancelable layer of `ctx`, or nullptr if it can never be done.
  static internal::CancelNode* CancelLayer(const Context& ctx) {
    return ctx.node_ ? ctx.node_->cancel_layer() : nullptr;
  }
  // The node a done signal observes, or nullptr if it can never be done.
  static internal::CancelNode* CancelLayer(const DoneSignal& d) {
    return d.node_.get();
  }
  // The innermost node of `ctx` (nullptr: Background).
  static const internal::Node* NodeOf(const Context& ctx) {
    return ctx.node_.get();
  }
  static Context FromNode(internal::NodeRef<internal::Node> node) {
    return Context(std::move(node));
  }
  // The node a CancelFunc cancels, or nullptr if it cancels nothing.
  static internal::CancelNode* CancelNodeOf(const CancelFunc& cancel) {
    return cancel.node_.get();
  }
  static CancelFunc MakeCancelFunc(internal::NodeRef<internal::CancelNode> n) {
    return CancelFunc(std::move(n));
  }
};

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_INTERNAL_CONTEXT_ACCESS_H_
