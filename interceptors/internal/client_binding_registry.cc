#include "interceptors/internal/client_binding_registry.h"

#include <utility>

namespace reqctx::internal {

ClientBindingRegistry& ClientBindingRegistry::Get() {
  static ClientBindingRegistry* const registry = new ClientBindingRegistry();
  return *registry;
}

void ClientBindingRegistry::Bind(const grpc::ClientContext* cc, Context ctx,
                                 std::string traceparent) {
  Binding replaced;  // A stale binding is released outside the lock.
  std::lock_guard<std::mutex> lock(mu_);
  Binding& slot = bindings_[cc];
  replaced = std::exchange(slot, Binding{std::move(ctx), std::move(traceparent)});
}

std::optional<Context> ClientBindingRegistry::Take(
    const grpc::ClientContext* cc, std::string_view traceparent) {
  std::optional<Binding> taken;  // Released outside the lock if stale.
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = bindings_.find(cc);
    if (it == bindings_.end()) return std::nullopt;
    taken = std::move(it->second);
    bindings_.erase(it);
  }
  if (taken->traceparent != traceparent) return std::nullopt;
  return std::move(taken->ctx);
}

size_t ClientBindingRegistry::Size() {
  std::lock_guard<std::mutex> lock(mu_);
  return bindings_.size();
}

}  // namespace reqctx::internal
