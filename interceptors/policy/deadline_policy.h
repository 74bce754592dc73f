// Deadline policies of one server method (issue 12, section 1), as pure
// functions over times, so the server glue, the policy wrapper and the tests
// share one definition.
//
//   * Default and maximum deadline (off unless set): a call with no deadline
//     gets now + default_deadline; a deadline later than now + max_deadline
//     is capped to it.
//   * Minimum budget: a call whose remaining budget at arrival (after the
//     default and the cap) is below the method's minimum is refused with
//     DEADLINE_EXCEEDED before its handler runs. The minimum is the larger of
//     a fixed `min_budget` and, when `learned_min_budget_quantile` is in
//     (0, 1], that quantile of the method's recent handling times once
//     `learned_warmup` calls have been handled.
//   * Reply margin: the handler's Context (and so every outbound call it
//     makes) gets a deadline `reply_margin` earlier than the call's, so the
//     hop has time to answer before the caller gives up; never earlier than
//     the arrival time.
//
// Thread-safety: pure functions; MethodPolicy is a plain value.
// Lifetime: no state.
#ifndef REQCTX_INTERCEPTORS_POLICY_DEADLINE_POLICY_H_
#define REQCTX_INTERCEPTORS_POLICY_DEADLINE_POLICY_H_

#include <optional>

#include <array>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "interceptors/policy/load_shedder.h"
#include "limits/limit_options.h"

namespace reqctx::policy {

struct MethodPolicy {
  // Minimum budget (zero: no fixed minimum).
  absl::Duration min_budget = absl::ZeroDuration();
  // In (0, 1]: also learn a minimum as this quantile of recent handling
  // times (e.g. 0.9); 0: off.
  double learned_min_budget_quantile = 0;
  int learned_warmup = 100;  // Handled calls before the learned minimum acts.
  int learned_window = 1000;  // Recent handling times kept.
  // Handler deadline = call deadline - reply_margin (zero: off).
  absl::Duration reply_margin = absl::ZeroDuration();
  // Deadline for calls that have none (nullopt: leave them without one).
  std::optional<absl::Duration> default_deadline;
  // Cap on incoming deadlines (nullopt: no cap).
  std::optional<absl::Duration> max_deadline;
  // Load shedding (load_shedder.h): on when max_concurrency > 0 or the
  // limit algorithm is adaptive (one limit shared by every method this
  // policy object applies to); off otherwise.
  // The fixed limit (limit.algorithm kFixed): > 0 limits concurrent calls.
  int max_concurrency = 0;
  int max_queue = -1;  // Queue length; < 0: 4 x the current limit.
  absl::Duration lifo_after = absl::Milliseconds(10);
  // The limit algorithm (//limits): kFixed (max_concurrency), or an
  // adaptive one that finds the limit itself (max_concurrency not read).
  limits::LimitOptions limit;
  // Guaranteed share of the limit per criticality (sheddable, default,
  // critical); all zero: none. See LoadShedderOptions::shares.
  std::array<double, 3> shares{};
  // Queue-delay admission (CoDel); zero target: off.
  absl::Duration codel_target = absl::ZeroDuration();
  absl::Duration codel_interval = absl::Milliseconds(100);
  // Refusal cap: at most this share of the calls arriving in each
  // `refusal_window` is refused (minimum budget and shedding together);
  // in (0, 1], 1: no cap.
  double max_refused_share = 1;
  absl::Duration refusal_window = absl::Seconds(1);
  // Expected handling time used by the shedder until the method has
  // `learned_warmup` samples (then their mean is used).
  absl::Duration expected_handling = absl::Milliseconds(1);
};

// InvalidArgument naming the field if `p` is out of range (negative
// durations, quantile outside [0, 1], warm-up or window < 1, the limit
// algorithm's parameters as "limit.<algorithm>.<field>", shares, ...).
absl::Status ValidateMethodPolicy(const MethodPolicy& p);

// Whether `p` turns load shedding on (see max_concurrency).
bool SheddingOn(const MethodPolicy& p);
// The shedder's options for `p` (mode: enforce; clock: absl::Now).
LoadShedderOptions ShedderOptionsFor(const MethodPolicy& p);

// The call's deadline after the default and the cap, for a call that
// arrived at `now` with `incoming` (nullopt: none). Sets *defaulted/*capped
// (may be null) when those rules changed it.
std::optional<absl::Time> EffectiveDeadline(const MethodPolicy& p,
                                            std::optional<absl::Time> incoming,
                                            absl::Time now, bool* defaulted,
                                            bool* capped);

// The handler's deadline: `call_deadline` minus the reply margin, but not
// before `now`. nullopt stays nullopt.
std::optional<absl::Time> HandlerDeadline(const MethodPolicy& p,
                                          std::optional<absl::Time> call_deadline,
                                          absl::Time now);

// The minimum budget in force: max(fixed, learned) where `learned` is the
// method's current quantile (nullopt before warm-up or when not learning).
absl::Duration MinimumBudget(const MethodPolicy& p,
                             std::optional<absl::Duration> learned);

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_DEADLINE_POLICY_H_
