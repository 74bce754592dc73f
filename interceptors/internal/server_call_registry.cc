#include "interceptors/internal/server_call_registry.h"

#include <utility>

namespace reqctx::internal {

ServerCallRegistry& ServerCallRegistry::Get() {
  static ServerCallRegistry* const registry = new ServerCallRegistry();
  return *registry;
}

void ServerCallRegistry::Add(const grpc::ServerContextBase* sc,
                             std::shared_ptr<ServerCall> call) {
  std::shared_ptr<ServerCall> replaced;  // Released outside the lock.
  std::lock_guard<std::mutex> lock(mu_);
  std::shared_ptr<ServerCall>& slot = calls_[sc];
  replaced = std::exchange(slot, std::move(call));
}

void ServerCallRegistry::Remove(const grpc::ServerContextBase* sc,
                                const ServerCall* owner) {
  std::shared_ptr<ServerCall> removed;  // Released outside the lock.
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(sc);
  if (it == calls_.end() || it->second.get() != owner) return;
  removed = std::move(it->second);
  calls_.erase(it);
}

std::shared_ptr<ServerCall> ServerCallRegistry::Find(
    const grpc::ServerContextBase* sc) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = calls_.find(sc);
  return it == calls_.end() ? nullptr : it->second;
}

size_t ServerCallRegistry::Size() {
  std::lock_guard<std::mutex> lock(mu_);
  return calls_.size();
}

}  // namespace reqctx::internal
