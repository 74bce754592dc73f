#include "interceptors/policy/retry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/sleep.h"
#include "interceptors/client_interceptor.h"
#include "interceptors/internal/trace_propagation.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/server_policy.h"
#include "interceptors/status_mapping.h"
#include "interceptors/trace_context.h"
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
  requests_.Add(now, 1);
  if (p <= 0) return true;
  return std::uniform_real_distribution<double>(0, 1)(rng_) >= p;
}

void RetryChannelState::RecordOutcome(grpc::StatusCode code) {
  if (code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
      code == grpc::StatusCode::UNAVAILABLE) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  accepts_.Add(absl::Now(), 1);
}

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

// ---- CallWithRetry ----

namespace {

constexpr int kMaxAttempts = 16;

struct Attempt {
  Context ctx;
  CancelFunc cancel;
  bool capped = false;  // Its deadline is the attempt_timeout, not ctx's.
  absl::Time start;
};

class Retrier {
 public:
  Retrier(const Context& ctx, const RetryPolicy& policy,
          RetryChannelState* channel)
      : ctx_(ctx),
        policy_(policy),
        channel_(channel),
        learner_(policy.learned_hedging.get()),
        max_attempts_(std::clamp(policy.max_attempts, 1, kMaxAttempts)),
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

  // Time left before ctx's deadline (infinite if none).
  absl::Duration Remaining(absl::Time now) const {
    std::optional<absl::Time> d = ctx_.Deadline();
    return d.has_value() ? *d - now : absl::InfiniteDuration();
  }

  // Whether an attempt may start now: ctx live, enough budget left.
  bool RoomForAttempt(absl::Time now) const {
    return Remaining(now) - policy_.reserve > absl::ZeroDuration() &&
           Remaining(now) >= policy_.expected_latency;
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

  Attempt MakeAttempt(absl::Time now) {
    std::optional<absl::Time> d = ctx_.Deadline();
    absl::Time deadline = now + policy_.attempt_timeout;
    bool capped = true;
    if (d.has_value() && *d - policy_.reserve <= deadline) {
      deadline = *d - policy_.reserve;
      capped = false;
    }
    Context traced = WithTraceContext(
        ctx_, TraceContext{trace_id_, internal::NewSpanId(), sampled_});
    auto [actx, cancel] = WithDeadline(traced, deadline);
    return Attempt{actx, std::move(cancel), capped, now};
  }

  // Makes attempt `n`; `elapsed` is set to its latency (from a.start).
  grpc::Status RunOne(const Attempt& a, int n, const AttemptFunction& f,
                      absl::Duration* elapsed,
                      std::optional<absl::Duration>* pushback,
                      bool* no_retry) {
    std::unique_ptr<grpc::ClientContext> cc = NewClientContext(a.ctx);
    PropagateCriticality(a.ctx, cc.get());
    grpc::Status s = f(cc.get(), n);
    if (channel_ != nullptr) channel_->RecordOutcome(s.error_code());
    *elapsed = absl::Now() - a.start;
    const auto& trailers = cc->GetServerTrailingMetadata();
    auto it = trailers.find(kRetryPushbackHeader);
    if (it != trailers.end()) {
      std::string_view v(it->second.data(), it->second.size());
      int64_t ms = -1;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
      if (ec != std::errc() || p != v.data() + v.size() || ms < 0) {
        *no_retry = true;  // gRPC A6: a malformed or negative pushback.
      } else {
        *pushback = absl::Milliseconds(ms);
      }
    }
    return s;
  }

  bool Retryable(const grpc::Status& s, const Attempt& a) const {
    if (ctx_.IsDone()) return false;
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && a.capped) {
      return true;  // Cut short by its own attempt_timeout.
    }
    return std::find(policy_.retryable_codes.begin(),
                     policy_.retryable_codes.end(),
                     s.error_code()) != policy_.retryable_codes.end();
  }

  absl::Duration Backoff(int retry) {
    double b = absl::ToDoubleSeconds(policy_.initial_backoff) *
               std::pow(std::max(policy_.backoff_multiplier, 1.0), retry);
    b = std::min(b, absl::ToDoubleSeconds(policy_.max_backoff));
    const double j = std::clamp(policy_.jitter, 0.0, 1.0);
    b *= std::uniform_real_distribution<double>(1 - j, 1 + j)(rng_);
    return absl::Seconds(std::max(b, 0.0));
  }

  grpc::Status CtxStatus() const { return ToGrpcStatus(ctx_.Err()); }

  RetryResult Sequential(const AttemptFunction& f) {
    RetryResult r;
    for (int n = 0; n < max_attempts_; ++n) {
      if (ctx_.IsDone()) {
        if (r.attempts == 0) r.status = CtxStatus();
        return r;
      }
      const absl::Time now = absl::Now();
      if (!RoomForAttempt(now)) {
        Count(PolicyCounter::kAttemptSkippedDeadline);
        if (r.attempts == 0) {
          r.status = grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                  "remaining budget below the expected "
                                  "latency: no attempt made");
        }
        return r;
      }
      if (std::optional<grpc::Status> no = Refusal(n, false)) {
        if (r.attempts == 0) r.status = *no;
        return r;
      }
      Attempt a = MakeAttempt(now);
      std::optional<absl::Duration> pushback;
      bool no_retry = false;
      absl::Duration elapsed;
      r.status = RunOne(a, n, f, &elapsed, &pushback, &no_retry);
      if (learner_ != nullptr && r.status.ok()) learner_->Record(elapsed);
      r.winner = n;
      ++r.attempts;
      if (r.status.ok() || no_retry || !Retryable(r.status, a) ||
          n + 1 >= max_attempts_) {
        return r;
      }
      const absl::Duration wait = pushback.value_or(Backoff(n));
      const absl::Time after = absl::Now() + wait;
      if (!RoomForAttempt(after)) {
        // Sleeping would leave no time for the next attempt.
        Count(PolicyCounter::kAttemptSkippedDeadline);
        return r;
      }
      if (!SleepFor(ctx_, wait).ok()) return r;
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
        std::optional<absl::Duration> pushback;
        bool no_retry;
      };
      std::vector<Done> done;  // Guarded by mu.
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
    bool finished = false;
    auto launch = [&](int n, bool hedge) -> bool {
      const absl::Time now = absl::Now();
      if (ctx_.IsDone()) return false;
      if (!RoomForAttempt(now)) {
        Count(PolicyCounter::kAttemptSkippedDeadline);
        return false;
      }
      if (std::optional<grpc::Status> no = Refusal(n, hedge)) {
        if (r.attempts == 0) r.status = *no;
        return false;
      }
      attempts.push_back(MakeAttempt(now));
      const Attempt& a = attempts.back();
      ++r.attempts;
      ++running;
      threads.emplace_back([this, shared, a, n, &f] {
        std::optional<absl::Duration> pushback;
        bool no_retry = false;
        absl::Duration elapsed;
        grpc::Status s = RunOne(a, n, f, &elapsed, &pushback, &no_retry);
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->returned[n] = true;
        if (learner_ != nullptr && s.ok() && !shared->censored[n]) {
          learner_->Record(elapsed);
        }
        shared->done.push_back({n, std::move(s), pushback, no_retry});
        shared->cv.notify_all();
      });
      return true;
    };
    if (!launch(0, false)) {
      if (r.status.ok()) {
        r.status = ctx_.IsDone()
                       ? CtxStatus()
                       : grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                      "remaining budget below the expected "
                                      "latency: no attempt made");
      }
      return r;
    }
    absl::Time next_hedge = absl::Now() + delay;
    bool more = true;  // Further attempts may still be started.
    std::unique_lock<std::mutex> lock(shared->mu);
    while (!finished) {
      if (!shared->done.empty()) {
        Shared::Done d = std::move(shared->done.front());
        shared->done.erase(shared->done.begin());
        --running;
        r.status = d.status;
        r.winner = d.n;
        const Attempt& a = attempts[static_cast<size_t>(d.n)];
        if (d.status.ok() || d.no_retry || !Retryable(d.status, a)) {
          finished = true;
          break;
        }
        if (d.no_retry) more = false;
        if (more && r.attempts < max_attempts_) {
          lock.unlock();
          const bool started = launch(r.attempts, false);
          lock.lock();
          if (!started) more = false;
          next_hedge = absl::Now() + delay;
        }
        if (running == 0) finished = true;
        continue;
      }
      if (more && r.attempts < max_attempts_ && absl::Now() >= next_hedge) {
        lock.unlock();
        const bool started = launch(r.attempts, true);
        lock.lock();
        if (!started) more = false;
        next_hedge = absl::Now() + delay;
        continue;
      }
      if (more && r.attempts < max_attempts_) {
        shared->cv.wait_until(lock, absl::ToChronoTime(next_hedge));
      } else {
        // Bounded: every running attempt has a deadline (its own, or ctx's
        // through attempt_timeout), and ctx's cancel cancels it.
        shared->cv.wait(lock, [&] { return !shared->done.empty(); });
      }
    }
    // Losers to an OK answer still running that ran at least the delay:
    // their time so far is a lower bound of their latency (see
    // LearnedHedgingDelay). Not when the call failed or ctx ended it.
    if (learner_ != nullptr && r.status.ok()) {
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
    // Cancel every other attempt at once.
    for (size_t i = 0; i < attempts.size(); ++i) {
      if (static_cast<int>(i) != r.winner) {
        attempts[i].cancel();
      }
    }
    if (running > 0) {
      for (int i = 0; i < running; ++i) {
        Count(PolicyCounter::kHedgeLosersCanceled);
      }
    }
    for (std::thread& t : threads) t.join();
    return r;
  }

 private:
  const Context ctx_;
  const RetryPolicy& policy_;
  RetryChannelState* const channel_;
  LearnedHedgingDelay* const learner_;  // May be null.
  const int max_attempts_;
  std::string trace_id_;
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
