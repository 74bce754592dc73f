// LoadShedder: a concurrency limit with a queue that knows deadlines
// (issue 12, section 3).
//
// At most `max_concurrency` calls run at once; the others wait in a queue of
// at most `max_queue` entries. Every decision is made as early as possible:
//   * On arrival, a call whose expected wait plus expected handling time
//     exceeds its remaining budget is refused at once with
//     RESOURCE_EXHAUSTED and a pushback (how long until a slot is likely to
//     be free), which the server sends as `grpc-retry-pushback-ms`.
//   * A queued call whose Context is done (deadline passed, client canceled)
//     is dropped before it runs, with that Context's error.
//   * When the queue is full, a more critical arrival evicts the least
//     critical queued call (sheddable first); otherwise the arrival is
//     refused.
//   * More critical calls are served first. Within one criticality the queue
//     is FIFO while it drains quickly, and serves the newest first once its
//     oldest entry has waited longer than `lifo_after` (adaptive LIFO, the
//     CoDel idea of a target queueing delay): under sustained overload the
//     calls that can still make their deadline are the ones served.
// The expected wait for an arrival is (calls ahead of it + 1) x expected
// handling time / max_concurrency.
//
// An admitted call gets its slot as a ShedSlot token, given back exactly
// once (by ShedSlot::Release or its destructor): a slot cannot be given back
// twice, nor forgotten.
//
// Thread-safety: all methods are safe from any thread. Decisions are
// delivered by calling the `decide` callback exactly once, without any lock
// held, either inside Acquire (run now, or refused) or later on the thread of
// a Release() or of the Context's AfterFunc (admitted from the queue, or
// dropped).
// Lifetime: the shedder must outlive every ShedSlot it handed out (until
// it is released) and every call it queued; the destructor refuses
// still-queued calls with UNAVAILABLE.
#ifndef REQCTX_INTERCEPTORS_POLICY_LOAD_SHEDDER_H_
#define REQCTX_INTERCEPTORS_POLICY_LOAD_SHEDDER_H_

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/core.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/policy_counters.h"

namespace reqctx::policy {

struct LoadShedderOptions {
  int max_concurrency = 1;  // >= 1 (smaller values are raised to 1).
  int max_queue = 0;        // < 0: 4 x max_concurrency; 0: no queue.
  absl::Duration lifo_after = absl::Milliseconds(10);
};

// Why a call did not get a slot (kNone: it did).
enum class ShedReason {
  kNone,
  kShedAtArrival,  // expected wait + handling exceeds the remaining budget
  kQueueFull,      // queue full, nothing less critical to evict
  kEvicted,        // queued, then evicted by a more critical arrival
  kExpired,        // its deadline passed before it could run
  kCanceled,       // its Context was canceled before it could run
  kShutdown,       // the shedder was destroyed while it was queued
};
inline constexpr size_t kShedReasonCount = 7;

class LoadShedder;

// One admitted call's concurrency slot. Move-only; given back exactly once:
// by Release() or, if not released, by the destructor. An empty token (not
// admitted, moved from, released) gives nothing back.
// Thread-safety: one token is used by one thread at a time (as any value);
// tokens of one shedder may be released concurrently.
class ShedSlot {
 public:
  ShedSlot() = default;
  ShedSlot(ShedSlot&& other) noexcept;
  ShedSlot& operator=(ShedSlot&& other) noexcept;
  ShedSlot(const ShedSlot&) = delete;
  ShedSlot& operator=(const ShedSlot&) = delete;
  ~ShedSlot() { Release(); }

  // True until the slot is given back.
  bool held() const { return shedder_ != nullptr; }
  // Gives the slot back; may admit a queued call (its `decide` runs on this
  // thread before Release returns). A no-op if not held.
  void Release();

 private:
  friend class LoadShedder;
  explicit ShedSlot(LoadShedder* shedder) : shedder_(shedder) {}
  LoadShedder* shedder_ = nullptr;
};

// What the shedder decided for one call. Move-only (it may carry a slot).
struct ShedDecision {
  // OK: the call holds `slot` until it is done. Otherwise
  // RESOURCE_EXHAUSTED (shed), or the Context's error (dropped from the
  // queue), or UNAVAILABLE (shedder destroyed).
  absl::Status status;
  // For RESOURCE_EXHAUSTED: how long the caller should wait before trying
  // again (>= 1 ms); zero otherwise.
  absl::Duration pushback = absl::ZeroDuration();
  ShedReason reason = ShedReason::kNone;
  // Whether the call waited in the queue, and for how long (from queueing
  // to this decision).
  bool queued = false;
  absl::Duration waited = absl::ZeroDuration();
  // Held iff status is OK: the call's slot.
  ShedSlot slot;
};

class LoadShedder {
 public:
  // `counters` may be null; if not, it must outlive the shedder.
  LoadShedder(LoadShedderOptions options, PolicyCounters* counters);
  ~LoadShedder();
  LoadShedder(const LoadShedder&) = delete;
  LoadShedder& operator=(const LoadShedder&) = delete;

  // Asks for a slot for a call bound to `ctx` (its deadline is the budget,
  // its end drops it from the queue) with criticality `c`, expected to take
  // `expected_handling` once running. `decide` is called exactly once (see
  // the header comment).
  void Acquire(const Context& ctx, Criticality c,
               absl::Duration expected_handling,
               std::function<void(ShedDecision)> decide);
  int running() const;
  int queued() const;

 private:
  friend class ShedSlot;
  struct Entry;
  using Queue = std::list<std::shared_ptr<Entry>>;

  // Removes `e` from its queue if it is still there; returns whether it was.
  bool RemoveLocked(const std::shared_ptr<Entry>& e);
  // Picks the next call to run (most critical first, adaptive LIFO), or null.
  std::shared_ptr<Entry> PopNextLocked(absl::Time now);
  void OnEntryDone(const std::shared_ptr<Entry>& e);
  void Count(PolicyCounter c, Criticality crit);
  // Gives back one admitted call's slot (ShedSlot::Release, once per
  // token); may admit a queued call.
  void Release();
  // An OK decision holding a new slot (running_ counted by the caller).
  ShedDecision Admitted();

  const LoadShedderOptions options_;
  PolicyCounters* const counters_;

  mutable std::mutex mu_;
  int running_ = 0;                  // Guarded by mu_.
  int queued_ = 0;                   // Guarded by mu_.
  std::array<Queue, 3> queues_;      // By Criticality. Guarded by mu_.
};

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_LOAD_SHEDDER_H_
