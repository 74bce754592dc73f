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
//   * its deadline is min(now + attempt_timeout, ctx's deadline - reserve);
//     an attempt that would get no time at all is not started;
//   * it carries ctx's trace id with a span id of its own, and ctx's
//     criticality in `baggage`;
//   * it is canceled when ctx is (so canceling ctx cancels every attempt).
// Between attempts: exponential backoff (initial_backoff x multiplier^n,
// capped at max_backoff, +-jitter), or the server's `grpc-retry-pushback-ms`
// when it sent one (a negative or malformed pushback means "do not retry").
// No attempt is started, and no backoff slept, when what would remain of
// the deadline afterwards is below `expected_latency`: the call returns the
// last attempt's status instead (or DEADLINE_EXCEEDED if none was made).
// Only statuses in `retryable_codes` are retried, plus an attempt cut short
// by its own attempt_timeout while ctx is still live.
// Per channel (RetryChannelState): a retry budget -- retries (and hedges)
// at most `ratio` of first attempts in the last `window`, plus
// `min_retries_per_second` -- and the SRE book's client-side adaptive
// throttling: an attempt is refused locally (UNAVAILABLE) with probability
// max(0, (requests - K x accepts) / (requests + 1)) over the last
// `throttle_window`, where accepts are attempts the server did not refuse
// with RESOURCE_EXHAUSTED or UNAVAILABLE.
// Hedging (hedging_delay set): a further attempt starts whenever
// hedging_delay passes with no answer (or at once after a retryable
// failure), up to max_attempts in total; the first OK or non-retryable
// answer wins and every other attempt is canceled at once. A hedge, like
// any attempt, starts only while the budget rules above allow one: never
// past ctx's deadline (minus reserve), never with less than
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
  std::vector<grpc::StatusCode> retryable_codes = {
      grpc::StatusCode::UNAVAILABLE};
  absl::Duration expected_latency = absl::ZeroDuration();
  std::optional<absl::Duration> hedging_delay;  // nullopt: no hedging.
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
  // Adaptive throttling: records a request; false if it must be refused
  // locally (then it counts as a request that was not accepted).
  bool AdmitByThrottle();
  // Records an attempt's outcome for the throttle.
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
