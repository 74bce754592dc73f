// PointerShard: which of 16 shards a registry keyed by a gRPC object's
// address uses. Internal to //interceptors.
//
// Heap addresses share their low bits (alignment), so the address is mixed
// with a Fibonacci multiplier and the top 4 bits pick the shard: every
// thread's calls spread over the shards instead of meeting on one lock.
// Pure function; thread-safe.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_POINTER_SHARD_H_
#define REQCTX_INTERCEPTORS_INTERNAL_POINTER_SHARD_H_

#include <cstddef>
#include <cstdint>

namespace reqctx::internal {

inline constexpr size_t kPointerShards = 16;

inline size_t PointerShard(const void* p) {
  const uint64_t h = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(p)) *
                     0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(h >> 60);  // Top 4 bits: 0..15.
}

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_POINTER_SHARD_H_
