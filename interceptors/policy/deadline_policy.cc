#include "interceptors/policy/deadline_policy.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"

namespace reqctx::policy {

absl::Status ValidateMethodPolicy(const MethodPolicy& p) {
  auto bad = [](const char* field) {
    return absl::InvalidArgumentError(
        absl::StrCat("method policy: ", field, " out of range"));
  };
  const absl::Duration zero = absl::ZeroDuration();
  if (p.min_budget < zero) return bad("min_budget");
  if (!(p.learned_min_budget_quantile >= 0 &&
        p.learned_min_budget_quantile <= 1)) {
    return bad("learned_min_budget_quantile");
  }
  if (p.learned_warmup < 1) return bad("learned_warmup");
  if (p.learned_window < 1) return bad("learned_window");
  if (p.reply_margin < zero) return bad("reply_margin");
  if (p.default_deadline.has_value() && *p.default_deadline <= zero) {
    return bad("default_deadline");
  }
  if (p.max_deadline.has_value() && *p.max_deadline <= zero) {
    return bad("max_deadline");
  }
  if (p.max_concurrency < 0) return bad("max_concurrency");
  if (p.lifo_after < zero) return bad("lifo_after");
  if (p.expected_handling < zero) return bad("expected_handling");
  if (!(p.max_refused_share > 0 && p.max_refused_share <= 1)) {
    return bad("max_refused_share");
  }
  if (p.refusal_window <= zero) return bad("refusal_window");
  if (SheddingOn(p)) {
    if (absl::Status s =
            ValidateLoadShedderOptions(ShedderOptionsFor(p), "method policy");
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

bool SheddingOn(const MethodPolicy& p) {
  return p.max_concurrency > 0 ||
         p.limit.algorithm != limits::Algorithm::kFixed;
}

LoadShedderOptions ShedderOptionsFor(const MethodPolicy& p) {
  LoadShedderOptions o;
  o.max_concurrency = p.max_concurrency;
  o.max_queue = p.max_queue;
  o.lifo_after = p.lifo_after;
  o.limit = p.limit;
  o.shares = p.shares;
  o.codel_target = p.codel_target;
  o.codel_interval = p.codel_interval;
  return o;
}

std::optional<absl::Time> EffectiveDeadline(const MethodPolicy& p,
                                            std::optional<absl::Time> incoming,
                                            absl::Time now, bool* defaulted,
                                            bool* capped) {
  if (defaulted != nullptr) *defaulted = false;
  if (capped != nullptr) *capped = false;
  std::optional<absl::Time> d = incoming;
  if (!d.has_value() && p.default_deadline.has_value()) {
    d = now + *p.default_deadline;
    if (defaulted != nullptr) *defaulted = true;
  }
  if (d.has_value() && p.max_deadline.has_value() &&
      *d > now + *p.max_deadline) {
    d = now + *p.max_deadline;
    if (capped != nullptr) *capped = true;
  }
  return d;
}

std::optional<absl::Time> HandlerDeadline(const MethodPolicy& p,
                                          std::optional<absl::Time> call_deadline,
                                          absl::Time now) {
  if (!call_deadline.has_value() || p.reply_margin <= absl::ZeroDuration()) {
    return call_deadline;
  }
  // Never earlier than now, and never later than the call's own deadline
  // (a deadline already past stays as it is).
  return std::min(*call_deadline,
                  std::max(*call_deadline - p.reply_margin, now));
}

absl::Duration MinimumBudget(const MethodPolicy& p,
                             std::optional<absl::Duration> learned) {
  absl::Duration m = p.min_budget;
  if (p.learned_min_budget_quantile > 0 && learned.has_value()) {
    m = std::max(m, *learned);
  }
  return m;
}

}  // namespace reqctx::policy
