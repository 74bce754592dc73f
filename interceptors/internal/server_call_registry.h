// ServerCallRegistry: finds the ServerCall of a live incoming call by a key
// (internal to //interceptors): Get() by its grpc::ServerContextBase (backs
// FromServerContext), ByContextRoot() by the root of its Context
// (ContextRoot, context/internal/owned_deadline.h: backs the budget
// ledger's outbound records, call_ledger.h).
//
// Entries are added when a call's metadata arrives and removed when the call
// ends. Removal names the owner, so a late removal by a finished call cannot
// erase a newer call that reuses the same ServerContext address.
//
// Thread-safety: all methods are safe from any thread. The map is split into 16
// shards by key (PointerShard), each with its own std::mutex and an open-
// addressing absl::flat_hash_map: every call adds, finds and removes an entry,
// so one global lock would be contended by all server threads and a node-based
// map would cost a malloc/free per call. Lifetime: a leaked singleton.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_REGISTRY_H_
#define REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_REGISTRY_H_

#include <cstddef>
#include <memory>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "interceptors/internal/pointer_shard.h"
#include "interceptors/internal/server_call.h"

namespace grpc {
class ServerContextBase;
}  // namespace grpc

namespace reqctx::internal {

class ServerCallRegistry {
 public:
  static ServerCallRegistry& Get();
  static ServerCallRegistry& ByContextRoot();

  void Add(const void* key, std::shared_ptr<ServerCall> call);
  // Removes the entry for `key` if it is still `owner`'s.
  void Remove(const void* key, const ServerCall* owner);
  std::shared_ptr<ServerCall> Find(const void* key);
  size_t Size();

 private:
  struct alignas(64) Shard {  // One cache line each: no false sharing.
    std::mutex mu;
    absl::flat_hash_map<const void*, std::shared_ptr<ServerCall>>
        calls;  // Guarded by mu.
  };

  ServerCallRegistry() = default;
  Shard& ShardFor(const void* key);

  Shard shards_[kPointerShards];
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_REGISTRY_H_
