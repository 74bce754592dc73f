#include "interceptors/internal/client_binding_registry.h"

#include <utility>

namespace reqctx::internal {

ClientBindingRegistry& ClientBindingRegistry::Get() {
  static ClientBindingRegistry* const registry = new ClientBindingRegistry();
  return *registry;
}

ClientBindingRegistry::Shard& ClientBindingRegistry::ShardFor(
    const grpc::ClientContext* cc) {
  return shards_[PointerShard(cc)];
}

void ClientBindingRegistry::Bind(const grpc::ClientContext* cc, Context ctx,
                                 std::string_view traceparent) {
  Binding binding{std::move(ctx), {traceparent.begin(), traceparent.end()}};
  Binding replaced;  // A stale binding is released outside the lock.
  Shard& shard = ShardFor(cc);
  std::lock_guard<std::mutex> lock(shard.mu);
  Binding& slot = shard.bindings[cc];
  replaced = std::exchange(slot, std::move(binding));
}

std::optional<Context> ClientBindingRegistry::Take(
    const grpc::ClientContext* cc, std::string_view traceparent) {
  std::optional<Binding> taken;  // Released outside the lock if stale.
  {
    Shard& shard = ShardFor(cc);
    std::lock_guard<std::mutex> lock(shard.mu);
    auto it = shard.bindings.find(cc);
    if (it == shard.bindings.end()) return std::nullopt;
    taken = std::move(it->second);
    shard.bindings.erase(it);
  }
  if (std::string_view(taken->traceparent.data(), taken->traceparent.size()) !=
      traceparent) {
    return std::nullopt;
  }
  return std::move(taken->ctx);
}

size_t ClientBindingRegistry::Size() {
  size_t n = 0;
  for (Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mu);
    n += shard.bindings.size();
  }
  return n;
}

}  // namespace reqctx::internal
