#include "interceptors/internal/client_binding_registry.h"

#include <cstdint>
#include <utility>

namespace reqctx::internal {

ClientBindingRegistry& ClientBindingRegistry::Get() {
  static ClientBindingRegistry* const registry = new ClientBindingRegistry();
  return *registry;
}

ClientBindingRegistry::Shard& ClientBindingRegistry::ShardFor(
    const grpc::ClientContext* cc) {
  static_assert(kShards == 16, "the shard is the top 4 bits of the hash");
  // Heap addresses share their low bits (alignment): mix, take the top bits.
  const uint64_t h = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(cc)) *
                     0x9E3779B97F4A7C15ull;
  return shards_[h >> 60];  // 16 shards.
}

void ClientBindingRegistry::Bind(const grpc::ClientContext* cc, Context ctx,
                                 std::string traceparent) {
  Binding replaced;  // A stale binding is released outside the lock.
  Shard& shard = ShardFor(cc);
  std::lock_guard<std::mutex> lock(shard.mu);
  Binding& slot = shard.bindings[cc];
  replaced = std::exchange(slot, Binding{std::move(ctx), std::move(traceparent)});
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
  if (taken->traceparent != traceparent) return std::nullopt;
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
