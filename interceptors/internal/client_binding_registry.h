// ClientBindingRegistry: hands the Context given to NewClientContext to the
// client interceptor of the call made with that grpc::ClientContext
// (internal to //interceptors).
//
// grpc::ClientContext has no slot for user data and a non-virtual destructor,
// so the binding lives here, keyed by the ClientContext's address, from
// NewClientContext until the call starts; the interceptor then takes it out
// (Take), so a finished call leaves nothing here. A binding also records the
// traceparent that NewClientContext put on the ClientContext; Take checks it,
// so a stale binding (a ClientContext discarded without a call, whose address
// is later reused by a plain ClientContext) is never applied to another call.
// Such a discarded-unused binding stays until its address is reused by
// another NewClientContext (which replaces it).
//
// Thread-safety: all methods are safe from any thread. As in
// ServerCallRegistry, the map is split into 16 shards by key (PointerShard),
// each with its own std::mutex and an absl::flat_hash_map (no global lock
// shared by all client threads, no map node allocated per call). Lifetime: a
// leaked singleton.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_CLIENT_BINDING_REGISTRY_H_
#define REQCTX_INTERCEPTORS_INTERNAL_CLIENT_BINDING_REGISTRY_H_

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "context/core.h"
#include "interceptors/internal/pointer_shard.h"

namespace grpc {
class ClientContext;
}  // namespace grpc

namespace reqctx::internal {

class ClientBindingRegistry {
 public:
  static ClientBindingRegistry& Get();

  void Bind(const grpc::ClientContext* cc, Context ctx,
            std::string_view traceparent);
  // Removes and returns the Context bound to `cc`, if the binding's
  // traceparent is `traceparent`; a mismatching (stale) binding is dropped.
  std::optional<Context> Take(const grpc::ClientContext* cc,
                              std::string_view traceparent);
  size_t Size();

 private:
  struct Binding {
    Context ctx;
    // Inline up to a version-00 header's 55 bytes (what NewClientContext
    // writes): a binding allocates nothing of its own.
    absl::InlinedVector<char, 55> traceparent;
  };
  struct alignas(64) Shard {  // One cache line each: no false sharing.
    std::mutex mu;
    absl::flat_hash_map<const grpc::ClientContext*, Binding>
        bindings;  // Guarded by mu.
  };

  ClientBindingRegistry() = default;
  Shard& ShardFor(const grpc::ClientContext* cc);

  Shard shards_[kPointerShards];
};

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_CLIENT_BINDING_REGISTRY_H_
