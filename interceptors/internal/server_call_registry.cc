#include "interceptors/internal/server_call_registry.h"

#include <utility>

namespace reqctx::internal {

ServerCallRegistry& ServerCallRegistry::Get() {
  static ServerCallRegistry* const registry = new ServerCallRegistry();
  return *registry;
}

ServerCallRegistry& ServerCallRegistry::ByContextRoot() {
  static ServerCallRegistry* const registry = new ServerCallRegistry();
  return *registry;
}

ServerCallRegistry::Shard& ServerCallRegistry::ShardFor(const void* sc) {
  return shards_[PointerShard(sc)];
}

void ServerCallRegistry::Add(const void* sc,
                             std::shared_ptr<ServerCall> call) {
  std::shared_ptr<ServerCall> replaced;  // Released outside the lock.
  Shard& shard = ShardFor(sc);
  std::lock_guard<std::mutex> lock(shard.mu);
  std::shared_ptr<ServerCall>& slot = shard.calls[sc];
  replaced = std::exchange(slot, std::move(call));
}

void ServerCallRegistry::Remove(const void* sc,
                                const ServerCall* owner) {
  std::shared_ptr<ServerCall> removed;  // Released outside the lock.
  Shard& shard = ShardFor(sc);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.calls.find(sc);
  if (it == shard.calls.end() || it->second.get() != owner) return;
  removed = std::move(it->second);
  shard.calls.erase(it);
}

std::shared_ptr<ServerCall> ServerCallRegistry::Find(const void* sc) {
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
