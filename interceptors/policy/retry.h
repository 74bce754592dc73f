// Retries and hedging inside a Context's deadline (issue 12, section 2).
//
//   reqctx::policy::RetryChannelState state;   // one per channel, shared
//   reqctx::policy::RetryPolicy policy;        // e.g. max_attempts = 3
//   auto out = reqctx::policy::CallWithRetry<EchoResponse>(
//       ctx, policy, &state,
//       [&](grpc::ClientContext* cc, EchoResponse* response) {
//         return stub->Echo(cc, request, response);   // one attempt
//       });
//   // out.status, out.response (the winning attempt's), out.attempts
//
// Each attempt gets its own grpc::ClientContext from NewClientContext on a
// child of `ctx`:
//   * its deadline is min(now + attempt_timeout, ctx's deadline - reserve)
//     (AttemptTimeoutFor, below); an attempt that would get no time at all is
//     not started;
//   * it carries ctx's trace id with a span id of its own, and ctx's
//     criticality in `baggage`;
//   * it is canceled when ctx is (so canceling ctx cancels every attempt).
// After each attempt, DecideRetry (below) says what comes next, from the
// attempt's status and pushback and what is left of ctx:
//   * OK, or a status that is not retryable: that is the call's answer.
//     Retryable are the codes in `retryable_codes`, except
//     DEADLINE_EXCEEDED, which is retryable only when the attempt was cut
//     by its own attempt_timeout (whatever `retryable_codes` says): a
//     DEADLINE_EXCEEDED the server returned, or one caused by ctx's
//     deadline, is final.
//   * ctx ended (canceled, or its deadline passed) before a retry: the
//     call's answer is ctx's error (CANCELLED or DEADLINE_EXCEEDED), at
//     once, also when it ends during a backoff or while waiting for the
//     next hedge.
//   * The server's `grpc-retry-pushback-ms` (pushback.h, gRFC A6): a valid
//     N >= 0 delays the next attempt by exactly N ms (and the backoff
//     restarts from initial_backoff after it); a negative or malformed one
//     stops retries and hedges; one above `max_pushback` also stops them
//     (the call does not wait that long). Then the call returns the last
//     attempt's status.
//   * Otherwise the next attempt waits an exponential backoff (Backoff,
//     below: initial_backoff x multiplier^n, capped at max_backoff,
//     +-jitter).
//   * No attempt is started, and no backoff slept, when what would remain
//     of the deadline afterwards is below `expected_latency` (or leaves
//     nothing beyond `reserve`): the call returns the last attempt's status
//     at once (or DEADLINE_EXCEEDED if none was made).
// Per channel (RetryChannelState): a retry budget -- retries (and hedges)
// at most `ratio` of first attempts in the last `window`, plus
// `min_retries_per_second` -- and the SRE book's client-side adaptive
// throttling: an attempt is refused locally (UNAVAILABLE) with probability
// max(0, (requests - K x accepts) / (requests + 1)) over the last
// `throttle_window`, where requests are attempts refused locally or whose
// outcome is known (not those in flight) and accepts are attempts the server
// did not refuse with RESOURCE_EXHAUSTED or UNAVAILABLE.
// Hedging (hedging_delay set): a further attempt starts whenever
// hedging_delay passes with no answer (or at once after a retryable
// failure), up to max_attempts in total; the first OK or non-retryable
// answer wins and every other attempt is canceled at once. Pushback, as in
// gRFC A6: after a pushback of N ms the next attempt starts no sooner than
// N ms later (whichever attempt sent it, whatever the hedging timer says),
// and the following ones resume hedging_delay after it; a negative or
// malformed pushback (or one above max_pushback) stops further attempts,
// and the call waits for those already running (the last to return gives
// the status, unless one answers OK or with a final status). A hedge,
// like any attempt, starts only while the budget rules above allow one:
// never past ctx's deadline (minus reserve), never with less than
// expected_latency left.
// Learned hedging (learned_hedging set): the delay is a quantile (default
// p95) of the method's recent attempt latencies (LearnedHedgingDelay,
// below), bounded by its min_delay/max_delay; until the warm-up count of
// latencies has been seen, the fixed hedging_delay is used, or, if that is
// unset, the call is not hedged (plain retries). The delay is read once at
// the start of each call.
//
// Thread-safety: CallWithRetry may be called from any thread, concurrently
// on one RetryChannelState and one LearnedHedgingDelay. The attempt function is called on the calling
// thread, or, when hedging, on one thread per attempt (concurrently: it must
// not share per-call state between attempts except through the Response
// each attempt is given).
// The decision functions (Backoff, AttemptTimeoutFor, RoomForAttempt,
// DecideRetry) are pure: no clock, no randomness of their own (a `draw` is
// passed in), no gRPC call; safe from any thread.
// Lifetime: CallWithRetry returns only after every attempt it started has
// returned; the RetryChannelState must outlive its calls.
#ifndef REQCTX_INTERCEPTORS_POLICY_RETRY_H_
#define REQCTX_INTERCEPTORS_POLICY_RETRY_H_

#include <grpcpp/client_context.h>
#include <grpcpp/support/status.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "context/core.h"
#include "interceptors/policy/latency_window.h"
#include "interceptors/policy/policy_counters.h"
#include "interceptors/policy/pushback.h"

namespace reqctx::policy {

struct LearnedHedgingOptions {
  double quantile = 0.95;  // Clamped to [0, 1].
  size_t window = 1000;    // Recent latencies kept (>= 1).
  size_t warmup = 50;      // Latencies seen before the delay is learned
                           // (clamped to [1, window]).
  // Bounds of the learned delay (a negative min counts as zero; a max below
  // min counts as min).
  absl::Duration min_delay = absl::Milliseconds(1);
  absl::Duration max_delay = absl::Seconds(1);
};

// LearnedHedgingDelay: the hedging delay of one method (or of one
// RetryPolicy), learned from the latencies of its recent attempts.
//
// CallWithRetry records into it, for every call made with a policy that
// points at it, hedged or not:
//   * each attempt that returned OK: its latency (start to return);
//   * each attempt canceled because another one answered OK first, if it
//     had run at least the call's hedging delay: the time it ran, a lower
//     bound of its latency. Without these the slow attempts that hedging cuts short
//     would never be seen, and the learned quantile would drift down;
//     with them every slow attempt still counts as slower than the delay.
// Failed attempts are not recorded (an error's latency is not the
// method's). Delay() is then the `quantile` of the last `window` latencies
// (nearest rank), clamped to [min_delay, max_delay], once `warmup`
// latencies have been recorded.
//
// Thread-safety: all methods are safe from any thread, concurrently (one
// std::mutex inside LatencyWindow; Delay() copies and partially sorts at
// most `window` samples outside it).
// Lifetime: plain object; share it between calls by std::shared_ptr (see
// RetryPolicy::learned_hedging).
class LearnedHedgingDelay {
 public:
  explicit LearnedHedgingDelay(LearnedHedgingOptions options = {});

  // Records one latency (negative counts as zero).
  void Record(absl::Duration latency);
  // The learned delay, or nullopt before `warmup` latencies.
  std::optional<absl::Duration> Delay() const;
  // Latencies recorded so far.
  int64_t samples() const { return window_.count(); }
  const LearnedHedgingOptions& options() const { return options_; }

 private:
  const LearnedHedgingOptions options_;
  LatencyWindow window_;
};

struct RetryPolicy {
  int max_attempts = 3;  // >= 1 (clamped to [1, 16]).
  absl::Duration attempt_timeout = absl::InfiniteDuration();
  absl::Duration reserve = absl::ZeroDuration();
  absl::Duration initial_backoff = absl::Milliseconds(10);
  absl::Duration max_backoff = absl::Seconds(1);
  double backoff_multiplier = 2.0;
  double jitter = 0.2;  // Fraction, in [0, 1].
  // DEADLINE_EXCEEDED here changes nothing: it is retried only when the
  // attempt's own attempt_timeout cut it (see DecideRetry).
  std::vector<grpc::StatusCode> retryable_codes = {
      grpc::StatusCode::UNAVAILABLE};
  absl::Duration expected_latency = absl::ZeroDuration();
  std::optional<absl::Duration> hedging_delay;  // nullopt: no hedging.
  // A server pushback longer than this stops retries and hedges instead of
  // holding the call (gRPC's wire type allows up to ~24.8 days).
  absl::Duration max_pushback = absl::Seconds(30);
  // Non-null: hedge after the learned delay once it is learned (see the
  // file comment). One per method: copies of this policy share it.
  std::shared_ptr<LearnedHedgingDelay> learned_hedging;
};

struct RetryChannelOptions {
  double ratio = 0.1;  // Retries per first attempt.
  double min_retries_per_second = 10;
  absl::Duration window = absl::Seconds(10);
  double throttle_k = 2.0;  // 0: no adaptive throttling.
  absl::Duration throttle_window = absl::Minutes(2);
};

// Per-channel retry budget and adaptive throttling state (see above).
class RetryChannelState {
 public:
  explicit RetryChannelState(RetryChannelOptions options = {});

  // Records the start of an attempt; false (and nothing recorded for the
  // budget) if a retry/hedge is refused by the budget. First attempts are
  // never refused by the budget.
  bool TryRetry();
  void RecordFirstAttempt();
  // Adaptive throttling: false if the attempt must be refused locally (then
  // it counts as a request that was not accepted). An admitted attempt
  // counts as a request only when RecordOutcome gives its outcome, so
  // attempts in flight never count as refusals (a burst of concurrent calls
  // on a cold channel is not throttled).
  bool AdmitByThrottle();
  // Records an admitted attempt's outcome for the throttle: a request, and
  // an accept unless RESOURCE_EXHAUSTED or UNAVAILABLE.
  void RecordOutcome(grpc::StatusCode code);

  PolicyCounters& counters() { return counters_; }
  PolicyCountersSnapshot Counters() const { return counters_.Snapshot(); }

 private:
  // Counts over a sliding time window, in 1 s buckets.
  struct Window {
    explicit Window(absl::Duration span);
    void Add(absl::Time now, double n);
    double Sum(absl::Time now);
    int64_t seconds;
    std::deque<std::pair<int64_t, double>> buckets;  // (second, count)
  };

  const RetryChannelOptions options_;
  PolicyCounters counters_;
  std::mutex mu_;
  Window first_attempts_;  // Guarded by mu_.
  Window retries_;         // Guarded by mu_.
  Window requests_;        // Guarded by mu_.
  Window accepts_;         // Guarded by mu_.
  std::mt19937_64 rng_;    // Guarded by mu_.
};

// Adds ctx's criticality (if not default) to `cc` as a W3C `baggage`
// entry, so the next hop sheds by it -- unless ctx's W3C baggage (which
// NewClientContext sends) already carries a `criticality` entry. CallWithRetry does this for every
// attempt; call it for calls made with NewClientContext directly.
void PropagateCriticality(const Context& ctx, grpc::ClientContext* cc);

// ---- The retry decision, as values ----

// The wait before retry number `retry` (0: the first wait; it restarts at 0
// after a server pushback): initial_backoff x max(backoff_multiplier, 1)^retry,
// capped at max_backoff, times a jitter factor (1 - j) + 2 j draw, where j
// is `jitter` clamped to [0, 1] and `draw` (clamped to [0, 1]) is a uniform
// random number the caller supplies. Never negative; max_backoff at most
// (x (1 + j)).
absl::Duration Backoff(const RetryPolicy& policy, int retry, double draw);

// What an attempt gets when `remaining` is left of the call's Context
// (InfiniteDuration() if it has no deadline).
struct AttemptTimeout {
  // min(attempt_timeout, remaining - reserve); infinite if both are.
  absl::Duration timeout = absl::InfiniteDuration();
  // True when attempt_timeout is the smaller and finite: the attempt has a
  // timer of its own, which may cut it (a DEADLINE_EXCEEDED then is
  // retryable); false when its deadline is the call's minus reserve.
  bool own_timer = false;
};
AttemptTimeout AttemptTimeoutFor(const RetryPolicy& policy,
                                 absl::Duration remaining);

// Whether an attempt may start with `remaining` left of the call's Context:
// remaining - reserve > 0 and remaining >= expected_latency.
bool RoomForAttempt(const RetryPolicy& policy, absl::Duration remaining);

// What one returned attempt tells DecideRetry.
struct AttemptOutcome {
  grpc::StatusCode code = grpc::StatusCode::OK;
  Pushback pushback;  // Parsed from its trailing metadata.
  // If the attempt had a timer of its own (AttemptTimeout::own_timer): the
  // time that was left, when the attempt returned, on the deadline gRPC
  // enforced for it (its ClientContext's, which NewClientContext derives
  // from the attempt's timer; <= 0 once it fired); nullopt otherwise. The
  // attempt counts as cut by its timer when it returned DEADLINE_EXCEEDED
  // with at most kAttemptTimerSlack left (gRPC rounds and converts the
  // deadline it enforces: it may fire that much early).
  std::optional<absl::Duration> own_timer_left;
};
inline constexpr absl::Duration kAttemptTimerSlack = absl::Milliseconds(2);

// The call, as DecideRetry sees it when one of its attempts has returned.
struct RetryCallState {
  int attempts_started = 1;
  // Backoff waits since the first attempt or the last pushback (the
  // `retry` of Backoff).
  int backoff_step = 0;
  // Hedging: without pushback, the next attempt may start at once.
  bool hedging = false;
  bool context_done = false;
  // Left of the call's Context now; InfiniteDuration() if no deadline.
  absl::Duration remaining = absl::InfiniteDuration();
};

enum class RetryAction {
  kRetry,        // Start another attempt `delay` from now, not sooner.
  kFinal,        // This attempt's status is the call's answer (OK or not
                 // retryable); when hedging, cancel the others.
  kNoMore,       // Retryable, but start no further attempt: this status is
                 // the answer unless another running attempt (hedging)
                 // answers.
  kContextDone,  // The call's Context ended: its error is the answer.
};
enum class RetryReason {
  kOk,
  kNotRetryable,     // Incl. DEADLINE_EXCEEDED not cut by its own timer.
  kContextDone,
  kPushbackStop,     // Negative or malformed pushback.
  kPushbackTooLong,  // Pushback above max_pushback.
  kMaxAttempts,
  kNoTimeLeft,       // After the wait, below expected_latency / reserve.
  kBackoff,          // kRetry after Backoff (zero when hedging).
  kPushback,         // kRetry after the server's pushback.
};
struct RetryPlan {
  RetryAction action = RetryAction::kFinal;
  RetryReason reason = RetryReason::kOk;
  absl::Duration delay = absl::ZeroDuration();  // kRetry only.
};

// The decision after an attempt returned, in this order: OK -> kFinal;
// not retryable (see the file comment) -> kFinal; context done ->
// kContextDone; pushback stop -> kNoMore; attempts_started >= max_attempts
// -> kNoMore; the wait (the pushback's delay, else when hedging zero, else
// Backoff(policy, backoff_step, draw)); a pushback above max_pushback ->
// kNoMore; no RoomForAttempt with `remaining - wait` -> kNoMore; else
// kRetry after the wait.
RetryPlan DecideRetry(const RetryPolicy& policy, const AttemptOutcome& outcome,
                      const RetryCallState& call, double draw);

// One attempt: make the call with `cc` (which must not be used for anything
// else) and return its status. `attempt` is 0 for the first one.
using AttemptFunction =
    std::function<grpc::Status(grpc::ClientContext* cc, int attempt)>;

struct RetryResult {
  grpc::Status status;
  int attempts = 0;  // Attempts started.
  int winner = -1;   // Index of the attempt whose status is returned; -1 if
                     // none was started.
};

// Runs `attempt` under `policy` (see the file comment). `channel` may be
// null (no budget, no throttling; counts are then not kept).
RetryResult CallWithRetry(const Context& ctx, const RetryPolicy& policy,
                          RetryChannelState* channel,
                          const AttemptFunction& attempt);

template <typename Response>
struct RetryOutcome {
  grpc::Status status;
  Response response;  // The winning attempt's; default if none.
  int attempts = 0;
};

// The same for a generated stub's unary method: each attempt writes its own
// Response; the winner's is returned.
template <typename Response, typename F>
RetryOutcome<Response> CallWithRetry(const Context& ctx,
                                     const RetryPolicy& policy,
                                     RetryChannelState* channel, F&& f) {
  std::vector<Response> responses(16);
  RetryResult r = CallWithRetry(
      ctx, policy, channel, [&](grpc::ClientContext* cc, int n) {
        return f(cc, &responses[static_cast<size_t>(n)]);
      });
  RetryOutcome<Response> out;
  out.status = std::move(r.status);
  out.attempts = r.attempts;
  if (r.winner >= 0) {
    out.response = std::move(responses[static_cast<size_t>(r.winner)]);
  }
  return out;
}

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_RETRY_H_
