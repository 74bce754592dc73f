// PolicyCounters: what the production policies did (issue 12), as plain
// monotonic counts, for the echo server's Stats and, later, a metrics
// endpoint (each counter has a stable snake_case name).
//
// Thread-safety: Add and Snapshot are safe from any thread (relaxed atomics:
// a snapshot is a consistent value per counter, not across counters).
// Lifetime: plain object; whoever owns the policy owns its counters.
#ifndef REQCTX_INTERCEPTORS_POLICY_POLICY_COUNTERS_H_
#define REQCTX_INTERCEPTORS_POLICY_POLICY_COUNTERS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace reqctx::policy {

enum class PolicyCounter : size_t {
  // Server, deadline policies.
  kMinBudgetRejected,   // refused before the handler: budget below minimum
  kDeadlineDefaulted,   // no incoming deadline: the default was applied
  kDeadlineCapped,      // incoming deadline beyond the maximum: capped
  kReplyMarginApplied,  // handler Context's deadline moved earlier
  // Server, load shedding.
  kAdmitted,          // ran at once or after queueing
  kQueued,            // waited in the queue (then admitted or dropped)
  kShedAtArrival,     // RESOURCE_EXHAUSTED: could not finish in time (at
                      // arrival, or when its turn in the queue came)
  kShedQueueFull,     // RESOURCE_EXHAUSTED at once: queue full, nothing less
                      // critical to evict
  kShedEvicted,       // RESOURCE_EXHAUSTED: evicted by a more critical call
  kShedExpired,       // dropped from the queue: deadline passed or canceled
  kShedSheddable,     // of the shed calls above, those marked sheddable
  kShedQueueDelay,    // RESOURCE_EXHAUSTED: standing queue (CoDel target)
  kDarkDecisions,     // dark mode: would have queued or refused; ran
  kRefusalsCapped,    // refusal turned into admission by the refusal cap
  kLimitDropped,      // admitted, still running at a deadline that covered
                      // the expected handling time: the limit's drop
  // Client, retries and hedging.
  kRetryCalls,             // calls made through the retry helper
  kRetryAttempts,          // attempts started (first ones included)
  kRetries,                // attempts after a failure
  kHedges,                 // attempts started by the hedging delay
  kHedgeLosersCanceled,    // attempts canceled because another won
  kRetryBudgetExhausted,   // retries refused by the channel's retry budget
  kThrottledLocally,       // attempts refused by adaptive throttling
  kAttemptSkippedDeadline, // no attempt: remaining budget below expected
                           // latency or backoff would pass the deadline
  kCount,
};

inline constexpr size_t kPolicyCounterCount =
    static_cast<size_t>(PolicyCounter::kCount);

// Stable snake_case name, e.g. "min_budget_rejected".
std::string_view PolicyCounterName(PolicyCounter c);

struct PolicyCountersSnapshot {
  std::array<int64_t, kPolicyCounterCount> values{};
  int64_t operator[](PolicyCounter c) const {
    return values[static_cast<size_t>(c)];
  }
};

class PolicyCounters {
 public:
  void Add(PolicyCounter c, int64_t n = 1) {
    values_[static_cast<size_t>(c)].fetch_add(n, std::memory_order_relaxed);
  }
  int64_t Get(PolicyCounter c) const {
    return values_[static_cast<size_t>(c)].load(std::memory_order_relaxed);
  }
  PolicyCountersSnapshot Snapshot() const {
    PolicyCountersSnapshot s;
    for (size_t i = 0; i < kPolicyCounterCount; ++i) {
      s.values[i] = values_[i].load(std::memory_order_relaxed);
    }
    return s;
  }

 private:
  std::array<std::atomic<int64_t>, kPolicyCounterCount> values_{};
};

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_POLICY_COUNTERS_H_
