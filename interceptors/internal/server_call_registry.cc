#include "interceptors/internal/server_call_registry.h"

#include <cstdint>
#include <utility>

namespace reqctx::internal {

ServerCallRegistry& ServerCallRegistry::Get() {
  static ServerCallRegistry* const registry = new ServerCallRegistry();
  return *registry;
}

ServerCallRegistry::Shard& ServerCallRegistry::ShardFor(
    const grpc::ServerContextBase* sc) {
  static_assert(kShards == 16, "the shard is the top 4 bits of the hash");
  // Heap addresses share their low bits (alignment): mix, take the top bits.
  const uint64_t h = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(sc)) *
                     0x9E3779B97F4A7C15ull;
  return shards_[h >> 60];  // 16 shards.
}

void ServerCallRegistry::Add(const grpc::ServerContextBase* sc,
                             std::shared_ptr<ServerCall> call) {
  std::shared_ptr<ServerCall> replaced;  // Released outside the lock.
  Shard& shard = ShardFor(sc);
  std::lock_guard<std::mutex> lock(shard.mu);
  std::shared_ptr<ServerCall>& slot = shard.calls[sc];
  replaced = std::exchange(slot, std::move(call));
}

void ServerCallRegistry::Remove(const grpc::ServerContextBase* sc,
                                const ServerCall* owner) {
  std::shared_ptr<ServerCall> removed;  // Released outside the lock.
  Shard& shard = ShardFor(sc);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.calls.find(sc);
  if (it == shard.calls.end() || it->second.get() != owner) return;
  removed = std::move(it->second);
  shard.calls.erase(it);
}

std::shared_ptr<ServerCall> ServerCallRegistry::Find(
    const grpc::ServerContextBase* sc) {
  Shard& shard = ShardFor(sc);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.calls.find(sc);
  return it == shard.calls.end() ? nullptr : it->second;
}

size_t ServerCallRegistry::Size() {
  size_t n = 0;
  for (Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mu);
    n += shard.calls.size();
  }
  return n;
}

}  // namespace reqctx::internal
