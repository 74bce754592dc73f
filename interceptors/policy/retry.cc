#include "interceptors/policy/retry.h"

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/after_func.h"
#include "context/internal/owned_deadline.h"
#include "context/sleep.h"
#include "interceptors/client_interceptor.h"
#include "interceptors/internal/trace_propagation.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/status_mapping.h"
#include "interceptors/trace_context.h"
#include "ledger/causes.h"
#include "w3c/baggage_context.h"

namespace reqctx::policy {

// ---- RetryChannelState ----

RetryChannelState::Window::Window(absl::Duration span)
    : seconds(std::max<int64_t>(1, absl::ToInt64Seconds(span))) {}

void RetryChannelState::Window::Add(absl::Time now, double n) {
  const int64_t s = absl::ToUnixSeconds(now);
  if (!buckets.empty() && buckets.back().first == s) {
    buckets.back().second += n;
  } else {
    buckets.emplace_back(s, n);
  }
}

double RetryChannelState::Window::Sum(absl::Time now) {
  const int64_t oldest = absl::ToUnixSeconds(now) - seconds + 1;
  while (!buckets.empty() && buckets.front().first < oldest) {
    buckets.pop_front();
  }
  double sum = 0;
  for (const auto& b : buckets) sum += b.second;
  return sum;
}

RetryChannelState::RetryChannelState(RetryChannelOptions options)
    : options_(options),
      first_attempts_(options.window),
      retries_(options.window),
      requests_(options.throttle_window),
      accepts_(options.throttle_window),
      rng_(std::random_device{}()) {}

void RetryChannelState::RecordFirstAttempt() {
  std::lock_guard<std::mutex> lock(mu_);
  first_attempts_.Add(absl::Now(), 1);
}

bool RetryChannelState::TryRetry() {
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mu_);
  const double allowed =
      options_.ratio * first_attempts_.Sum(now) +
      options_.min_retries_per_second * static_cast<double>(retries_.seconds);
  if (retries_.Sum(now) + 1 > allowed) return false;
  retries_.Add(now, 1);
  return true;
}

bool RetryChannelState::AdmitByThrottle() {
  if (options_.throttle_k <= 0) return true;
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mu_);
  const double requests = requests_.Sum(now);
  const double accepts = accepts_.Sum(now);
  const double p = std::max(
      0.0, (requests - options_.throttle_k * accepts) / (requests + 1));
  // An admitted attempt is counted by RecordOutcome, once it is known
  // whether it was accepted: counted here, attempts still in flight looked
  // like refusals, and a burst on a cold channel refused itself.
  if (p <= 0 || std::uniform_real_distribution<double>(0, 1)(rng_) >= p) {
    return true;
  }
  requests_.Add(now, 1);  // Refused locally: a request not accepted.
  return false;
}

void RetryChannelState::RecordOutcome(grpc::StatusCode code) {
  const absl::Time now = absl::Now();
  std::lock_guard<std::mutex> lock(mu_);
  requests_.Add(now, 1);
  if (code != grpc::StatusCode::RESOURCE_EXHAUSTED &&
      code != grpc::StatusCode::UNAVAILABLE) {
    accepts_.Add(now, 1);
  }
}

// The outbound header budget keeps this member first (client_interceptor.h).
static_assert(std::string_view(kBudgetFirstBaggageKey) == kCriticalityKey);

void PropagateCriticality(const Context& ctx, grpc::ClientContext* cc) {
  // The call's own W3C baggage, which NewClientContext sends, has it
  // already (it came in with the call).
  if (Baggage(ctx).Get(kCriticalityKey).has_value()) return;
  Criticality c = CriticalityOf(ctx);
  if (c != Criticality::kDefault) {
    cc->AddMetadata(kBaggageHeader, BaggageWithCriticality("", c));
  }
}

// ---- LearnedHedgingDelay ----

LearnedHedgingDelay::LearnedHedgingDelay(LearnedHedgingOptions options)
    : options_(options), window_(options.window, options.warmup) {}

void LearnedHedgingDelay::Record(absl::Duration latency) {
  window_.Add(latency);
}

std::optional<absl::Duration> LearnedHedgingDelay::Delay() const {
  std::optional<absl::Duration> q = window_.Quantile(options_.quantile);
  if (!q.has_value()) return std::nullopt;
  const absl::Duration lo = std::max(options_.min_delay, absl::ZeroDuration());
  const absl::Duration hi = std::max(options_.max_delay, lo);
  return std::clamp(*q, lo, hi);
}

// ---- The retry decision ----

namespace {

constexpr int kMaxAttempts = 16;

int MaxAttempts(const RetryPolicy& policy) {
  return std::clamp(policy.max_attempts, 1, kMaxAttempts);
}

}  // namespace

absl::Duration Backoff(const RetryPolicy& policy, int retry, double draw) {
  double b = absl::ToDoubleSeconds(policy.initial_backoff) *
             std::pow(std::max(policy.backoff_multiplier, 1.0),
                      std::max(retry, 0));
  b = std::min(b, absl::ToDoubleSeconds(policy.max_backoff));
  const double j = std::clamp(policy.jitter, 0.0, 1.0);
  b *= (1 - j) + 2 * j * std::clamp(draw, 0.0, 1.0);
  // Not NaN (a zero backoff times an infinite multiplier) nor negative.
  return b > 0 ? absl::Seconds(b) : absl::ZeroDuration();
}

AttemptTimeout AttemptTimeoutFor(const RetryPolicy& policy,
                                 absl::Duration remaining) {
  const absl::Duration call = remaining - policy.reserve;
  if (policy.attempt_timeout < call) return {policy.attempt_timeout, true};
  return {call, false};
}

bool RoomForAttempt(const RetryPolicy& policy, absl::Duration remaining) {
  return remaining - policy.reserve > absl::ZeroDuration() &&
         remaining >= policy.expected_latency;
}

RetryPlan DecideRetry(const RetryPolicy& policy, const AttemptOutcome& outcome,
                      const RetryCallState& call, double draw) {
  using A = RetryAction;
  using R = RetryReason;
  if (outcome.code == grpc::StatusCode::OK) return {A::kFinal, R::kOk};
  const bool retryable =
      outcome.code == grpc::StatusCode::DEADLINE_EXCEEDED
          // Only an attempt cut by its own timer; never the server's or
          // ctx's DEADLINE_EXCEEDED.
          ? outcome.own_timer_left.has_value() &&
                *outcome.own_timer_left <= kAttemptTimerSlack
          : std::find(policy.retryable_codes.begin(),
                      policy.retryable_codes.end(),
                      outcome.code) != policy.retryable_codes.end();
  if (!retryable) return {A::kFinal, R::kNotRetryable};
  if (call.context_done) return {A::kContextDone, R::kContextDone};
  const Pushback& pb = outcome.pushback;
  if (pb.kind == Pushback::Kind::kStop) return {A::kNoMore, R::kPushbackStop};
  if (call.attempts_started >= MaxAttempts(policy)) {
    return {A::kNoMore, R::kMaxAttempts};
  }
  RetryPlan plan{A::kRetry, R::kBackoff, absl::ZeroDuration()};
  if (pb.kind == Pushback::Kind::kRetryAfter) {
    if (pb.delay > policy.max_pushback) {
      return {A::kNoMore, R::kPushbackTooLong};
    }
    plan.reason = R::kPushback;
    plan.delay = pb.delay;
  } else if (!call.hedging) {
    plan.delay = Backoff(policy, call.backoff_step, draw);
  }
  if (!RoomForAttempt(policy, call.remaining - plan.delay)) {
    return {A::kNoMore, R::kNoTimeLeft};
  }
  return plan;
}

// ---- CallWithRetry ----

namespace {

struct Attempt {
  Context ctx;
  CancelFunc cancel;
  bool own_timer = false;  // Its deadline is attempt_timeout, not ctx's.
  absl::Time start;
};

// What RunOne returns: the attempt's status and what DecideRetry needs.
struct Returned {
  grpc::Status status;
  AttemptOutcome outcome;
  absl::Duration elapsed;  // From Attempt::start.
};

class Retrier {
 public:
  Retrier(const Context& ctx, const RetryPolicy& policy,
          RetryChannelState* channel)
      : ctx_(ctx),
        policy_(policy),
        channel_(channel),
        learner_(policy.learned_hedging.get()),
        max_attempts_(MaxAttempts(policy)),
        rng_(std::random_device{}()) {
    std::optional<TraceContext> tc = GetTraceContext(ctx);
    if (tc.has_value()) {
      trace_id_ = tc->trace_id;
      sampled_ = tc->sampled;
    } else {
      trace_id_ = internal::NewTraceId();
    }
    if (channel_ != nullptr) {
      channel_->counters().Add(PolicyCounter::kRetryCalls);
    }
  }

  void Count(PolicyCounter c) {
    if (channel_ != nullptr) channel_->counters().Add(c);
  }

  // Time left before ctx's deadline, on its monotonic clock (infinite if
  // none).
  absl::Duration Remaining() const {
    return ctx_.TimeLeft().value_or(absl::InfiniteDuration());
  }

  // Budget and throttle checks for attempt `n`; OK to go, else why not.
  std::optional<grpc::Status> Refusal(int n, bool hedge) {
    if (channel_ == nullptr) return std::nullopt;
    if (n == 0) {
      channel_->RecordFirstAttempt();
    } else if (!channel_->TryRetry()) {
      Count(PolicyCounter::kRetryBudgetExhausted);
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "retry budget exhausted");
    }
    if (!channel_->AdmitByThrottle()) {
      Count(PolicyCounter::kThrottledLocally);
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "throttled by the client (adaptive throttling)");
    }
    Count(PolicyCounter::kRetryAttempts);
    if (n > 0) Count(hedge ? PolicyCounter::kHedges : PolicyCounter::kRetries);
    return std::nullopt;
  }

  // Every check before attempt `n` (ctx live, room left, budget, throttle):
  // nullopt to go, else the status the call would return if no attempt had
  // been made yet.
  std::optional<grpc::Status> CannotStart(int n, bool hedge) {
    if (ctx_.IsDone()) return CtxStatus();
    if (!RoomForAttempt(policy_, Remaining())) {
      Count(PolicyCounter::kAttemptSkippedDeadline);
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                          "remaining budget below the expected latency: no "
                          "attempt made");
    }
    return Refusal(n, hedge);
  }

  Attempt MakeAttempt() {
    const AttemptTimeout t = AttemptTimeoutFor(policy_, Remaining());
    Context traced = WithTraceContext(
        ctx_, TraceContext{trace_id_, internal::NewSpanId(), sampled_});
    auto [actx, cancel] = t.timeout == absl::InfiniteDuration()
                              ? WithCancel(traced)
                              : WithTimeout(traced, t.timeout);
    return Attempt{actx, std::move(cancel), t.own_timer, absl::Now()};
  }

  // Makes attempt `n`.
  Returned RunOne(const Attempt& a, int n, const AttemptFunction& f) {
    std::unique_ptr<grpc::ClientContext> cc = NewClientContext(a.ctx);
    PropagateCriticality(a.ctx, cc.get());
    Returned r;
    r.status = f(cc.get(), n);
    if (channel_ != nullptr) channel_->RecordOutcome(r.status.error_code());
    r.elapsed = absl::Now() - a.start;
    r.outcome.code = r.status.error_code();
    // What gRPC enforced is the ClientContext's deadline, which
    // NewClientContext may set earlier than the attempt's (it keeps back what
    // grpc-timeout's rounding could add): measure the timer against that.
    if (a.own_timer) {
      r.outcome.own_timer_left =
          absl::FromChrono(cc->deadline()) - absl::Now();
    }
    const auto& trailers = cc->GetServerTrailingMetadata();
    if (auto it = trailers.find(kRetryPushbackHeader); it != trailers.end()) {
      r.outcome.pushback = ParsePushback(
          std::string_view(it->second.data(), it->second.size()));
    }
    return r;
  }

  RetryPlan Decide(const AttemptOutcome& outcome, int attempts,
                   int backoff_step, bool hedging) {
    RetryCallState call;
    call.attempts_started = attempts;
    call.backoff_step = backoff_step;
    call.hedging = hedging;
    call.context_done = ctx_.IsDone();
    call.remaining = Remaining();
    RetryPlan plan = DecideRetry(
        policy_, outcome, call,
        std::uniform_real_distribution<double>(0, 1)(rng_));
    if (plan.reason == RetryReason::kNoTimeLeft) {
      Count(PolicyCounter::kAttemptSkippedDeadline);
    }
    return plan;
  }

  grpc::Status CtxStatus() const { return ContextEndStatus(ctx_); }

  // The call ended by ctx: its error, no winner.
  RetryResult EndedByContext(RetryResult r) const {
    r.status = CtxStatus();
    r.winner = -1;
    return r;
  }

  RetryResult Sequential(const AttemptFunction& f) {
    RetryResult r;
    int backoff_step = 0;
    for (int n = 0; n < max_attempts_; ++n) {
      if (std::optional<grpc::Status> no = CannotStart(n, false)) {
        // Before the first attempt any refusal is the answer; later, ctx's
        // end is, and otherwise the last attempt's status stands.
        if (r.attempts == 0) r.status = *no;
        if (ctx_.IsDone()) return EndedByContext(r);
        return r;
      }
      Attempt a = MakeAttempt();
      Returned ret = RunOne(a, n, f);
      if (learner_ != nullptr && ret.status.ok()) learner_->Record(ret.elapsed);
      r.status = std::move(ret.status);
      r.winner = n;
      ++r.attempts;
      const RetryPlan plan = Decide(ret.outcome, r.attempts, backoff_step,
                                    /*hedging=*/false);
      if (plan.action == RetryAction::kContextDone) return EndedByContext(r);
      if (plan.action != RetryAction::kRetry) return r;
      backoff_step =
          plan.reason == RetryReason::kPushback ? 0 : backoff_step + 1;
      if (!SleepFor(ctx_, plan.delay).ok()) return EndedByContext(r);
    }
    return r;
  }

  // Hedges after `delay` (see the file comment).
  RetryResult Hedged(const AttemptFunction& f, absl::Duration delay) {
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      struct Done {
        int n;
        grpc::Status status;
        AttemptOutcome outcome;
      };
      std::vector<Done> done;     // Guarded by mu.
      bool ctx_done = false;      // Guarded by mu.
      // Per attempt: it returned / its lower bound was recorded as a loser
      // (so its latency is recorded once at most). Guarded by mu.
      bool returned[kMaxAttempts] = {};
      bool censored[kMaxAttempts] = {};
    };
    auto shared = std::make_shared<Shared>();
    std::vector<Attempt> attempts;
    std::vector<std::thread> threads;
    RetryResult r;
    int running = 0;
    auto launch = [&](int n, bool hedge) -> bool {
      if (std::optional<grpc::Status> no = CannotStart(n, hedge)) {
        if (r.attempts == 0) r.status = *no;
        return false;
      }
      attempts.push_back(MakeAttempt());
      const Attempt& a = attempts.back();
      ++r.attempts;
      ++running;
      threads.emplace_back([this, shared, a, n, &f] {
        Returned ret = RunOne(a, n, f);
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->returned[n] = true;
        if (learner_ != nullptr && ret.status.ok() && !shared->censored[n]) {
          learner_->Record(ret.elapsed);
        }
        shared->done.push_back({n, std::move(ret.status), ret.outcome});
        shared->cv.notify_all();
      });
      return true;
    };
    if (!launch(0, false)) {
      if (ctx_.IsDone()) return EndedByContext(r);
      return r;
    }
    // Wakes the loop below when ctx ends while it waits for the next start
    // (with no attempt running, nothing else would).
    AfterFuncHandle wake = AfterFunc(ctx_, [shared] {
      std::lock_guard<std::mutex> lock(shared->mu);
      shared->ctx_done = true;
      shared->cv.notify_all();
    });
    // The next attempt starts at max(next_start, not_before): next_start is
    // the hedging timer (or now, after a retryable failure); not_before is
    // the latest pushback's end, which no attempt may precede.
    absl::Time next_start = absl::Now() + delay;
    absl::Time not_before = absl::InfinitePast();
    bool more = true;            // Further attempts may still be started.
    bool retry_pending = false;  // The next start follows a failure.
    bool by_context = false;
    std::unique_lock<std::mutex> lock(shared->mu);
    while (true) {
      if (!shared->done.empty()) {
        Shared::Done d = std::move(shared->done.front());
        shared->done.erase(shared->done.begin());
        --running;
        r.status = std::move(d.status);
        r.winner = d.n;
        const RetryPlan plan =
            Decide(d.outcome, r.attempts, /*backoff_step=*/0, /*hedging=*/true);
        if (plan.action == RetryAction::kFinal) break;
        if (plan.action == RetryAction::kContextDone) {
          by_context = true;
          break;
        }
        if (plan.action == RetryAction::kNoMore) {
          more = false;
        } else {
          const absl::Time now = absl::Now();
          next_start = now + plan.delay;
          if (plan.reason == RetryReason::kPushback) {
            not_before = std::max(not_before, now + plan.delay);
          }
          retry_pending = true;
        }
        continue;
      }
      if (shared->ctx_done || ctx_.IsDone()) {
        by_context = true;
        break;
      }
      const bool can_start = more && r.attempts < max_attempts_;
      if (!can_start && running == 0) break;  // Every attempt returned.
      const absl::Time start_at = std::max(next_start, not_before);
      if (can_start && absl::Now() >= start_at) {
        lock.unlock();
        const bool started = launch(r.attempts, !retry_pending);
        lock.lock();
        if (!started) more = false;
        retry_pending = false;
        next_start = absl::Now() + delay;
        continue;
      }
      // Bounded: every running attempt has a deadline (its own, or ctx's
      // through attempt_timeout), and ctx's end wakes this wait.
      if (can_start && start_at != absl::InfiniteFuture()) {
        shared->cv.wait_until(lock, absl::ToChronoTime(start_at));
      } else {
        shared->cv.wait(lock);
      }
    }
    // Losers to an OK answer still running that ran at least the delay:
    // their time so far is a lower bound of their latency (see
    // LearnedHedgingDelay). Not when the call failed or ctx ended it.
    if (learner_ != nullptr && !by_context && r.status.ok()) {
      const absl::Time now = absl::Now();
      for (size_t i = 0; i < attempts.size(); ++i) {
        if (static_cast<int>(i) == r.winner || shared->returned[i]) continue;
        if (now - attempts[i].start >= delay) {
          shared->censored[i] = true;
          learner_->Record(now - attempts[i].start);
        }
      }
    }
    lock.unlock();
    // Cancel every other attempt at once: a loser's Context says it lost
    // (its call's status then names the cause: "canceled: hedge lost").
    for (size_t i = 0; i < attempts.size(); ++i) {
      if (by_context) {
        attempts[i].cancel();
      } else if (static_cast<int>(i) != r.winner) {
        internal::CancelWithCause(attempts[i].cancel,
                                  CauseStatus(CauseKind::kHedgeLost));
      }
    }
    if (!by_context) {
      for (int i = 0; i < running; ++i) {
        Count(PolicyCounter::kHedgeLosersCanceled);
      }
    }
    for (std::thread& t : threads) t.join();
    if (by_context) return EndedByContext(r);
    return r;
  }

 private:
  const Context ctx_;
  const RetryPolicy& policy_;
  RetryChannelState* const channel_;
  LearnedHedgingDelay* const learner_;  // May be null.
  const int max_attempts_;
  TraceId trace_id_;
  bool sampled_ = true;
  std::mt19937_64 rng_;
};

}  // namespace

RetryResult CallWithRetry(const Context& ctx, const RetryPolicy& policy,
                          RetryChannelState* channel,
                          const AttemptFunction& attempt) {
  Retrier r(ctx, policy, channel);
  std::optional<absl::Duration> delay = policy.hedging_delay;
  if (policy.learned_hedging != nullptr) {
    if (std::optional<absl::Duration> d = policy.learned_hedging->Delay()) {
      delay = d;
    }
  }
  if (delay.has_value()) return r.Hedged(attempt, *delay);
  return r.Sequential(attempt);
}

}  // namespace reqctx::policy
