// ServerCallRegistry: finds the ServerCall of a live incoming call by its
// grpc::ServerContextBase (internal to //interceptors; backs
// FromServerContext).
//
// Entries are added when a call's metadata arrives and removed when the call
// ends. Removal names the owner, so a late removal by a finished call cannot
// erase a newer call that reuses the same ServerContext address.
//
// Thread-safety: all methods are safe from any thread (one std::mutex).
// Lifetime: a leaked singleton.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_REGISTRY_H_
#define REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_REGISTRY_H_

#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "interceptors/internal/server_call.h"

namespace grpc {
class ServerContextBase;
}  // namespace grpc

namespace reqctx::internal {

class ServerCallRegistry {
 public:
  static ServerCallRegistry& Get();

  void Add(const grpc::ServerContextBase* sc, std::shared_ptr<ServerCall> call);
  // Removes the entry for `sc` if it is still `owner`'s.
  void Remove(const grpc::ServerContextBase* sc, const ServerCall* owner);
  std::shared_ptr<ServerCall> Find(const grpc::ServerContextBase* sc);
  size_t Size();

 private:
  ServerCallRegistry() = default;

  std::mutex mu_;
  std::unordered_map<const grpc::ServerContextBase*, std::shared_ptr<ServerCall>>
      calls_;  // Guarded by mu_.
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_SERVER_CALL_REGISTRY_H_
