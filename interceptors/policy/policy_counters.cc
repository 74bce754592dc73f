#include "interceptors/policy/policy_counters.h"

namespace reqctx::policy {

std::string_view PolicyCounterName(PolicyCounter c) {
  static constexpr std::array<std::string_view, kPolicyCounterCount> kNames = {
      "min_budget_rejected",   "deadline_defaulted",
      "deadline_capped",       "reply_margin_applied",
      "admitted",              "queued",
      "shed_at_arrival",       "shed_queue_full",
      "shed_evicted",          "shed_expired",
      "shed_sheddable",        "shed_queue_delay",
      "dark_decisions",        "refusals_capped",
      "limit_dropped",
      "retry_calls",
      "retry_attempts",        "retries",
      "hedges",                "hedge_losers_canceled",
      "retry_budget_exhausted", "throttled_locally",
      "attempt_skipped_deadline",
  };
  size_t i = static_cast<size_t>(c);
  return i < kNames.size() ? kNames[i] : "unknown";
}

}  // namespace reqctx::policy
