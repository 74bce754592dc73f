// Unit tests of //interceptors/policy's gRPC-free parts (issue 12):
// criticality in baggage, deadline rules, latency windows, the
// deadline-aware shedder, detach with a bound.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <functional>
#include <thread>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/deadline_policy.h"
#include "interceptors/policy/detach.h"
#include "interceptors/policy/latency_window.h"
#include "interceptors/policy/load_shedder.h"
#include "interceptors/policy/peer_ranges.h"
#include "interceptors/policy/policy_counters.h"
#include "w3c/baggage_context.h"

namespace reqctx::policy {
namespace {

constexpr absl::Duration kBound = absl::Seconds(20);

TEST(CriticalityTest, ParsesTheEntryAmongOthers) {
  EXPECT_EQ(CriticalityFromBaggage(""), Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage("criticality=critical"),
            Criticality::kCritical);
  EXPECT_EQ(CriticalityFromBaggage("a=1, criticality = sheddable ;p=1,b=2"),
            Criticality::kSheddable);
  EXPECT_EQ(CriticalityFromBaggage("criticality=default"),
            Criticality::kDefault);
  // Unknown, empty or malformed values fall back to default.
  EXPECT_EQ(CriticalityFromBaggage("criticality=urgent"),
            Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage("criticality="), Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage("criticality"), Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage(",,,=,"), Criticality::kDefault);
  // A key that only starts with "criticality" is another key.
  EXPECT_EQ(CriticalityFromBaggage("criticalityx=critical"),
            Criticality::kDefault);
  // One parser (//w3c's): a later member with the same key wins.
  EXPECT_EQ(CriticalityFromBaggage("criticality=critical,criticality=sheddable"),
            Criticality::kSheddable);
  // The codec's rules: percent-encoding is decoded, properties ignored.
  EXPECT_EQ(CriticalityFromBaggage("criticality=crit%69cal;ttl=5"),
            Criticality::kCritical);
  EXPECT_EQ(CriticalityFromBaggage("a=1,criticality\t=\tcritical"),
            Criticality::kCritical);
}

TEST(CriticalityTest, HostileBaggageGivesDefaultNeverFails) {
  // A malformed member is dropped, the others kept.
  EXPECT_EQ(CriticalityFromBaggage("bad key=1,criticality=critical"),
            Criticality::kCritical);
  EXPECT_EQ(CriticalityFromBaggage("criticality=crit ical"),
            Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage("criticality=%zz"), Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage(std::string("criticality=critical\0x", 22)),
            Criticality::kDefault);
  // Past W3C's 180 members, the rest are dropped (linear work, no failure).
  std::string many;
  for (int i = 0; i < 200; ++i) absl::StrAppend(&many, "k", i, "=v,");
  EXPECT_EQ(CriticalityFromBaggage(many + "criticality=critical"),
            Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage(std::string(100000, ',')),
            Criticality::kDefault);
  EXPECT_EQ(CriticalityFromBaggage(std::string(100000, '=')),
            Criticality::kDefault);
}

TEST(CriticalityTest, FormatsKeepingOtherEntries) {
  EXPECT_EQ(BaggageWithCriticality("", Criticality::kCritical),
            "criticality=critical");
  EXPECT_EQ(BaggageWithCriticality("a=1, criticality=critical ,b=2",
                                   Criticality::kSheddable),
            "a=1,b=2,criticality=sheddable");
  EXPECT_EQ(BaggageWithCriticality("criticality=critical",
                                    Criticality::kDefault),
            "");
  for (Criticality c : {Criticality::kSheddable, Criticality::kDefault,
                        Criticality::kCritical}) {
    EXPECT_EQ(CriticalityFromBaggage(BaggageWithCriticality("x=y", c)), c);
  }
  // The codec's output: malformed members dropped, values re-encoded.
  EXPECT_EQ(BaggageWithCriticality("bad key=1,a=%41 , b=2;p",
                                   Criticality::kCritical),
            "a=A,b=2;p,criticality=critical");
  // At the W3C member limit the criticality member still gets on the wire,
  // first, pushing the last member out.
  std::string full;
  for (int i = 0; i < 180; ++i) absl::StrAppend(&full, i ? "," : "", "k", i, "=v");
  std::string out = BaggageWithCriticality(full, Criticality::kSheddable);
  EXPECT_TRUE(absl::StartsWith(out, "criticality=sheddable,k0=v")) << out;
  EXPECT_EQ(CriticalityFromBaggage(out), Criticality::kSheddable);
  EXPECT_EQ(ParseBaggage(out).size(), 180u);
}

TEST(CriticalityTest, TravelsInContext) {
  Context ctx = Background();
  EXPECT_EQ(CriticalityOf(ctx), Criticality::kDefault);
  Context c = WithCriticality(ctx, Criticality::kSheddable);
  auto [child, cancel] = WithCancel(c);
  EXPECT_EQ(CriticalityOf(child), Criticality::kSheddable);
  // It is in the Context's baggage too, which NewClientContext sends on,
  // next to the call's other members.
  Context with_tenant = WithBaggage(ctx, "tenant", "acme");
  Context critical = WithCriticality(with_tenant, Criticality::kCritical);
  EXPECT_EQ(BaggageHeaderFor(critical), "tenant=acme,criticality=critical");
  EXPECT_EQ(Baggage(critical).Get("criticality"), "critical");
  // Back to default: the member is removed, the rest kept.
  Context plain = WithCriticality(critical, Criticality::kDefault);
  EXPECT_EQ(CriticalityOf(plain), Criticality::kDefault);
  EXPECT_EQ(BaggageHeaderFor(plain), "tenant=acme");
  // A Context whose baggage came from the wire (the server glue's
  // WithBaggageHeader) has the criticality it names.
  EXPECT_EQ(CriticalityOf(WithBaggageHeader(ctx, "x=1,criticality=sheddable")),
            Criticality::kSheddable);
  EXPECT_EQ(CriticalityOf(WithBaggageHeader(ctx, "criticality=nope")),
            Criticality::kDefault);
}

TEST(DeadlinePolicyTest, DefaultAndCap) {
  const absl::Time now = absl::Now();
  MethodPolicy p;
  bool defaulted = true, capped = true;
  EXPECT_EQ(EffectiveDeadline(p, std::nullopt, now, &defaulted, &capped),
            std::nullopt);
  EXPECT_FALSE(defaulted);
  EXPECT_FALSE(capped);
  p.default_deadline = absl::Milliseconds(100);
  p.max_deadline = absl::Seconds(1);
  EXPECT_EQ(EffectiveDeadline(p, std::nullopt, now, &defaulted, &capped),
            now + absl::Milliseconds(100));
  EXPECT_TRUE(defaulted);
  EXPECT_FALSE(capped);
  EXPECT_EQ(EffectiveDeadline(p, now + absl::Seconds(5), now, &defaulted,
                              &capped),
            now + absl::Seconds(1));
  EXPECT_FALSE(defaulted);
  EXPECT_TRUE(capped);
  EXPECT_EQ(EffectiveDeadline(p, now + absl::Milliseconds(500), now,
                              &defaulted, &capped),
            now + absl::Milliseconds(500));
  EXPECT_FALSE(capped);
}

TEST(DeadlinePolicyTest, ReplyMarginNeverBeforeNow) {
  const absl::Time now = absl::Now();
  MethodPolicy p;
  EXPECT_EQ(HandlerDeadline(p, now + absl::Seconds(1), now),
            now + absl::Seconds(1));
  p.reply_margin = absl::Milliseconds(50);
  EXPECT_EQ(HandlerDeadline(p, now + absl::Seconds(1), now),
            now + absl::Milliseconds(950));
  EXPECT_EQ(HandlerDeadline(p, now + absl::Milliseconds(20), now), now);
  EXPECT_EQ(HandlerDeadline(p, now - absl::Seconds(1), now),
            now - absl::Seconds(1));
  EXPECT_EQ(HandlerDeadline(p, std::nullopt, now), std::nullopt);
}

TEST(DeadlinePolicyTest, MinimumBudgetIsTheLargerOfFixedAndLearned) {
  MethodPolicy p;
  p.min_budget = absl::Milliseconds(5);
  EXPECT_EQ(MinimumBudget(p, absl::Milliseconds(50)), absl::Milliseconds(5));
  p.learned_min_budget_quantile = 0.9;
  EXPECT_EQ(MinimumBudget(p, absl::Milliseconds(50)), absl::Milliseconds(50));
  EXPECT_EQ(MinimumBudget(p, std::nullopt), absl::Milliseconds(5));
  EXPECT_EQ(MinimumBudget(p, absl::Milliseconds(1)), absl::Milliseconds(5));
}

TEST(DeadlinePolicyTest, ValidationNamesTheField) {
  MethodPolicy p;
  EXPECT_TRUE(ValidateMethodPolicy(p).ok());
  p.learned_min_budget_quantile = 1.5;
  absl::Status s = ValidateMethodPolicy(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("learned_min_budget_quantile"),
            std::string::npos);
  p = MethodPolicy();
  p.reply_margin = absl::Milliseconds(-1);
  EXPECT_NE(ValidateMethodPolicy(p).message().find("reply_margin"),
            std::string::npos);
  p = MethodPolicy();
  p.default_deadline = absl::ZeroDuration();
  EXPECT_FALSE(ValidateMethodPolicy(p).ok());
}

TEST(LatencyWindowTest, QuantileAfterWarmup) {
  LatencyWindow w(100, 10);
  for (int i = 1; i <= 9; ++i) w.Add(absl::Milliseconds(i));
  EXPECT_EQ(w.Quantile(0.9), std::nullopt);
  EXPECT_EQ(w.Mean(), std::nullopt);
  w.Add(absl::Milliseconds(10));
  EXPECT_EQ(w.Quantile(0.9), absl::Milliseconds(9));
  EXPECT_EQ(w.Quantile(1.0), absl::Milliseconds(10));
  EXPECT_EQ(w.Quantile(0.0), absl::Milliseconds(1));
  EXPECT_EQ(w.Mean(), absl::Microseconds(5500));
}

TEST(LatencyWindowTest, KeepsOnlyTheRecentSamples) {
  LatencyWindow w(10, 5);
  for (int i = 0; i < 100; ++i) w.Add(absl::Seconds(1));
  for (int i = 0; i < 10; ++i) w.Add(absl::Milliseconds(1));
  EXPECT_EQ(w.Quantile(1.0), absl::Milliseconds(1));
  EXPECT_EQ(w.count(), 110);
  w.Add(absl::Milliseconds(-5));  // Counts as zero.
  EXPECT_EQ(w.Quantile(0.0), absl::ZeroDuration());
}

TEST(LatencyWindowTest, RecentMeanFollowsAChangeAtOnce) {
  LatencyWindow w(10, 2);
  w.Add(absl::Milliseconds(100));
  EXPECT_EQ(w.Mean(4), std::nullopt);  // before warm-up
  w.Add(absl::Milliseconds(100));
  EXPECT_EQ(w.Mean(4), absl::Milliseconds(100));  // fewer kept than asked
  for (int i = 0; i < 20; ++i) w.Add(absl::Milliseconds(10));  // wraps
  w.Add(absl::Milliseconds(50));
  w.Add(absl::Milliseconds(50));
  EXPECT_EQ(w.Mean(2), absl::Milliseconds(50));
  EXPECT_EQ(w.Mean(4), absl::Milliseconds(30));
  EXPECT_EQ(w.Mean(0), absl::Milliseconds(50));  // at least one
  EXPECT_EQ(w.Mean(100), absl::Milliseconds(18));  // all 10 kept
}

// What a test reads of a decision (ShedDecision is move-only: it carries
// the slot, which Decisions keeps).
struct Seen {
  absl::Status status;
  absl::Duration pushback;
  ShedReason reason = ShedReason::kNone;
  bool queued = false;
  absl::Duration waited;
  bool slot_held = false;
};

// Collects decisions and keeps admitted calls' slots until Release(id);
// waits for them without sleeping.
class Decisions {
 public:
  std::function<void(ShedDecision)> Slot(int id) {
    return [this, id](ShedDecision d) {
      std::lock_guard<std::mutex> lock(mu_);
      got_.emplace_back(id, Seen{d.status, d.pushback, d.reason, d.queued,
                                 d.waited, d.slot.held()});
      if (d.slot.held()) slots_[id] = std::move(d.slot);
      cv_.notify_all();
    };
  }
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoSeconds(kBound),
                        [&] { return got_.size() >= n; });
  }
  std::vector<std::pair<int, Seen>> Get() {
    std::lock_guard<std::mutex> lock(mu_);
    return got_;
  }
  std::optional<Seen> Of(int id) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [i, d] : got_) {
      if (i == id) return d;
    }
    return std::nullopt;
  }
  // Gives back the slot of call `id` (which may admit a queued call, whose
  // decision arrives here on this thread). False if it holds none.
  bool Release(int id) {
    ShedSlot slot;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = slots_.find(id);
      if (it == slots_.end()) return false;
      slot = std::move(it->second);
      slots_.erase(it);
    }
    slot.Release();  // Outside mu_: it may call Slot(...)'s function.
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::pair<int, Seen>> got_;  // Guarded by mu_.
  std::map<int, ShedSlot> slots_;          // Guarded by mu_.
};

TEST(LoadShedderTest, RunsUpToTheLimitThenQueuesFifo) {
  PolicyCounters counters;
  LoadShedder s({/*max_concurrency=*/2, /*max_queue=*/4,
                 /*lifo_after=*/absl::Hours(1)},
                &counters);
  Decisions d;
  Context ctx = Background();
  for (int i = 0; i < 4; ++i) {
    s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(1), d.Slot(i));
  }
  ASSERT_TRUE(d.WaitFor(2));
  EXPECT_EQ(d.Get().size(), 2u);  // 2 and 3 wait.
  EXPECT_EQ(s.running(), 2);
  EXPECT_EQ(s.queued(), 2);
  EXPECT_TRUE(d.Get()[0].second.slot_held);
  ASSERT_TRUE(d.Release(0));
  ASSERT_TRUE(d.WaitFor(3));
  EXPECT_EQ(d.Get()[2].first, 2);  // Oldest first while the queue is young.
  EXPECT_FALSE(d.Get()[0].second.queued);  // Ran at once.
  EXPECT_TRUE(d.Get()[2].second.queued);   // Waited, then admitted.
  EXPECT_TRUE(d.Get()[2].second.slot_held);
  EXPECT_EQ(d.Get()[2].second.reason, ShedReason::kNone);
  EXPECT_GE(d.Get()[2].second.waited, absl::ZeroDuration());
  ASSERT_TRUE(d.Release(1));
  ASSERT_TRUE(d.WaitFor(4));
  ASSERT_TRUE(d.Release(2));
  ASSERT_TRUE(d.Release(3));
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(counters.Get(PolicyCounter::kAdmitted), 4);
  EXPECT_EQ(counters.Get(PolicyCounter::kQueued), 2);
}

TEST(LoadShedderTest, NewestFirstOnceTheQueueIsOld) {
  LoadShedder s({1, 8, /*lifo_after=*/absl::ZeroDuration()}, nullptr);
  Decisions d;
  Context ctx = Background();
  for (int i = 0; i < 4; ++i) {
    s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(1), d.Slot(i));
  }
  ASSERT_TRUE(d.WaitFor(1));
  // The oldest entry has waited longer than lifo_after (zero): newest first.
  absl::SleepFor(absl::Milliseconds(1));
  ASSERT_TRUE(d.Release(0));
  ASSERT_TRUE(d.WaitFor(2));
  EXPECT_EQ(d.Get()[1].first, 3);
  ASSERT_TRUE(d.Release(3));
  ASSERT_TRUE(d.WaitFor(3));
  ASSERT_TRUE(d.Release(d.Get()[2].first));
  ASSERT_TRUE(d.WaitFor(4));
  EXPECT_EQ(d.Get()[2].first, 2);
  EXPECT_EQ(d.Get()[3].first, 1);
  ASSERT_TRUE(d.Release(1));
  EXPECT_EQ(s.running(), 0);
}

TEST(LoadShedderTest, RefusesAtOnceWhatCannotFinishInTime) {
  PolicyCounters counters;
  LoadShedder s({1, 8, absl::Hours(1)}, &counters);
  Decisions d;
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(100),
            d.Slot(0));
  ASSERT_TRUE(d.WaitFor(1));
  // Expected wait 100 ms + handling 100 ms > 150 ms budget.
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(150));
  const absl::Time before = absl::Now();
  s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(100), d.Slot(1));
  ASSERT_TRUE(d.WaitFor(2));
  EXPECT_LT(absl::Now() - before, absl::Milliseconds(50));  // At once.
  std::optional<Seen> r = d.Of(1);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GE(r->pushback, absl::Milliseconds(100));
  EXPECT_EQ(r->reason, ShedReason::kShedAtArrival);
  EXPECT_FALSE(r->queued);
  EXPECT_FALSE(r->slot_held);
  EXPECT_FALSE(d.Release(1));
  EXPECT_EQ(counters.Get(PolicyCounter::kShedAtArrival), 1);
  EXPECT_EQ(s.queued(), 0);
  ASSERT_TRUE(d.Release(0));
  EXPECT_EQ(s.running(), 0);
}

TEST(LoadShedderTest, DropsAQueuedCallWhoseDeadlinePasses) {
  PolicyCounters counters;
  LoadShedder s({1, 8, absl::Hours(1)}, &counters);
  Decisions d;
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
            d.Slot(0));
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(30));
  s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(1), d.Slot(1));
  ASSERT_TRUE(d.WaitFor(2));  // Dropped by its deadline, without a Release.
  std::optional<Seen> r = d.Of(1);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(r->reason, ShedReason::kExpired);
  EXPECT_TRUE(r->queued);
  EXPECT_GE(r->waited, absl::Milliseconds(29));
  EXPECT_EQ(s.queued(), 0);
  EXPECT_EQ(counters.Get(PolicyCounter::kShedExpired), 1);
  ASSERT_TRUE(d.Release(0));
  EXPECT_EQ(s.running(), 0);
}

TEST(LoadShedderTest, DropsAQueuedCallThatIsCanceled) {
  LoadShedder s({1, 8, absl::Hours(1)}, nullptr);
  Decisions d;
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
            d.Slot(0));
  auto [ctx, cancel] = WithCancel(Background());
  s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(1), d.Slot(1));
  cancel();
  ASSERT_TRUE(d.WaitFor(2));
  EXPECT_EQ(d.Of(1)->status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(d.Of(1)->reason, ShedReason::kCanceled);
  EXPECT_TRUE(d.Of(1)->queued);
  ASSERT_TRUE(d.Release(0));
}

TEST(LoadShedderTest, SheddableFirstAndCriticalServedFirst) {
  PolicyCounters counters;
  LoadShedder s({1, /*max_queue=*/2, absl::Hours(1)}, &counters);
  Decisions d;
  Context ctx = Background();
  s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(1), d.Slot(0));
  s.Acquire(ctx, Criticality::kSheddable, absl::Milliseconds(1), d.Slot(1));
  s.Acquire(ctx, Criticality::kDefault, absl::Milliseconds(1), d.Slot(2));
  // Queue full: a critical call evicts the sheddable one.
  s.Acquire(ctx, Criticality::kCritical, absl::Milliseconds(1), d.Slot(3));
  ASSERT_TRUE(d.WaitFor(2));
  EXPECT_EQ(d.Of(1)->status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(d.Of(1)->reason, ShedReason::kEvicted);
  EXPECT_TRUE(d.Of(1)->queued);
  // Queue full of calls at least as critical: a sheddable arrival is refused.
  s.Acquire(ctx, Criticality::kSheddable, absl::Milliseconds(1), d.Slot(4));
  ASSERT_TRUE(d.WaitFor(3));
  EXPECT_EQ(d.Of(4)->status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(d.Of(4)->reason, ShedReason::kQueueFull);
  // The critical call is served before the older default one.
  ASSERT_TRUE(d.Release(0));
  ASSERT_TRUE(d.WaitFor(4));
  EXPECT_EQ(d.Get()[3].first, 3);
  ASSERT_TRUE(d.Release(3));
  ASSERT_TRUE(d.WaitFor(5));
  EXPECT_EQ(d.Get()[4].first, 2);
  ASSERT_TRUE(d.Release(2));
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(counters.Get(PolicyCounter::kShedEvicted), 1);
  EXPECT_EQ(counters.Get(PolicyCounter::kShedQueueFull), 1);
  EXPECT_EQ(counters.Get(PolicyCounter::kShedSheddable), 2);
}

TEST(LoadShedderTest, DestructorRefusesQueuedCalls) {
  Decisions d;
  std::optional<Seen> refused;
  {
    LoadShedder s({1, 8, absl::Hours(1)}, nullptr);
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              d.Slot(0));
    ASSERT_TRUE(d.WaitFor(1));
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              [&](ShedDecision r) {
                refused = Seen{r.status, r.pushback, r.reason, r.queued,
                               r.waited, r.slot.held()};
                // Call 0's slot goes back while the shedder (its destructor
                // running) still exists, as a slot must.
                d.Release(0);
              });
  }
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(refused->reason, ShedReason::kShutdown);
  EXPECT_FALSE(refused->slot_held);
}

// A slot is a token: given back once, by Release or by its destructor; a
// second Release, or one of a moved-from token, gives nothing back (before
// the token, a second Release was clamped at zero running calls, hiding it;
// with two slots taken it freed a slot still in use).
TEST(LoadShedderTest, ASlotIsGivenBackExactlyOnce) {
  PolicyCounters counters;
  LoadShedder s({2, 0, absl::Hours(1)}, &counters);
  std::vector<ShedSlot> slots;
  for (int i = 0; i < 2; ++i) {
    s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
              [&](ShedDecision d) { slots.push_back(std::move(d.slot)); });
  }
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(s.running(), 2);
  slots[0].Release();
  EXPECT_FALSE(slots[0].held());
  slots[0].Release();  // Nothing left to give back.
  EXPECT_EQ(s.running(), 1);
  ShedSlot moved = std::move(slots[1]);
  EXPECT_FALSE(slots[1].held());
  slots[1].Release();
  EXPECT_EQ(s.running(), 1);
  {
    ShedSlot last = std::move(moved);  // Its destructor gives it back.
  }
  EXPECT_EQ(s.running(), 0);
  // A refused call holds nothing.
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
            [&](ShedDecision d) { EXPECT_TRUE(d.slot.held()); });
  s.Acquire(Background(), Criticality::kDefault, absl::Milliseconds(1),
            [&](ShedDecision d) { EXPECT_TRUE(d.slot.held()); });
  EXPECT_EQ(s.running(), 0);  // Both decisions (and slots) went out of scope.
}

// Threads hold their slots while others ask: each admitted call keeps its
// slot until the limit is reached (or a short bound passes), so slots really
// overlap, and the count never exceeds the limit.
TEST(LoadShedderTest, ManyThreadsBalance) {
  constexpr int kLimit = 3;
  LoadShedder s({kLimit, 16, absl::Milliseconds(1)}, nullptr);
  std::mutex mu;
  std::condition_variable cv;
  int running = 0;      // Guarded by mu.
  int max_running = 0;  // Guarded by mu.
  std::atomic<int> finished{0};
  std::atomic<int> admitted{0};
  constexpr int kThreads = 8;
  constexpr int kPerThread = 100;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        std::mutex call_mu;
        std::condition_variable call_cv;
        std::optional<ShedDecision> got;
        auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(20));
        s.Acquire(ctx, Criticality::kDefault, absl::Microseconds(10),
                  [&](ShedDecision d) {
                    std::lock_guard<std::mutex> lock(call_mu);
                    got = std::move(d);
                    call_cv.notify_all();
                  });
        {
          std::unique_lock<std::mutex> lock(call_mu);
          ASSERT_TRUE(call_cv.wait_for(lock, std::chrono::seconds(20),
                                       [&] { return got.has_value(); }));
        }
        if (got->status.ok()) {
          ++admitted;
          std::unique_lock<std::mutex> lock(mu);
          max_running = std::max(max_running, ++running);
          cv.notify_all();
          // Hold the slot until every slot is taken (others are waiting),
          // bounded: the last calls of the test find nobody to wait for.
          cv.wait_for(lock, std::chrono::milliseconds(20),
                      [&] { return running >= kLimit; });
          --running;
          lock.unlock();
          got->slot.Release();
        }
        ++finished;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(finished.load(), kThreads * kPerThread);
  EXPECT_GT(admitted.load(), 0);
  EXPECT_EQ(max_running, kLimit);  // Slots overlapped, up to the limit only.
  EXPECT_EQ(s.running(), 0);
  EXPECT_EQ(s.queued(), 0);
}

TEST(PeerRangesTest, MatchesGrpcPeersAgainstRanges) {
  absl::StatusOr<PeerRanges> r =
      PeerRanges::Parse({"10.0.0.0/8", "192.168.1.7", "[::1]", "fd00::/8"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->Contains("ipv4:10.200.3.4:5555"));
  EXPECT_TRUE(r->Contains("ipv4:192.168.1.7:1"));
  EXPECT_FALSE(r->Contains("ipv4:192.168.1.8:1"));
  EXPECT_FALSE(r->Contains("ipv4:11.0.0.1:5555"));
  EXPECT_TRUE(r->Contains("ipv6:[::1]:5555"));
  EXPECT_TRUE(r->Contains("ipv6:%5B::1%5D:5555"));
  EXPECT_TRUE(r->Contains("ipv6:[fd12:3456::1]:80"));
  EXPECT_FALSE(r->Contains("ipv6:[fe80::1]:80"));
  // An IPv4 peer seen through an IPv6 socket is its IPv4 address.
  EXPECT_TRUE(r->Contains("ipv6:[::ffff:10.1.1.1]:5555"));
  // Not an IP peer, or malformed: in no range.
  for (const char* peer : {"", "unix:/tmp/sock", "ipv4:", "ipv4:10.0.0.1",
                           "ipv6:::1:5", "ipv6:[::1", "ipv4:10.0.0.1x:5",
                           "ipv4:[::1]:5", "10.0.0.1:5"}) {
    EXPECT_FALSE(r->Contains(peer)) << peer;
  }
  absl::StatusOr<PeerRanges> all = PeerRanges::Parse({"0.0.0.0/0"});
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->Contains("ipv4:1.2.3.4:5"));
  EXPECT_FALSE(all->Contains("ipv6:[::2]:5"));
  EXPECT_FALSE(PeerRanges().Contains("ipv4:1.2.3.4:5"));
}

TEST(PeerRangesTest, MalformedRangesAreNamed) {
  for (const char* bad : {"", "10.0.0.0/33", "::1/129", "10.0.0.0/-1",
                          "10.0.0.0/x", "example.com", "10.0.0.0/8/8",
                          "1.2.3.4:80"}) {
    absl::StatusOr<PeerRanges> r = PeerRanges::Parse({"127.0.0.1", bad});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(std::string("\"") + bad + "\""),
              std::string::npos)
        << r.status();
  }
}

TEST(DetachTest, OutlivesTheCallButNotTheGrace) {
  static constexpr Key<std::string> kUser("user");
  auto [call, end_call] = WithTimeout(WithValue(Background(), kUser,
                                                std::string("ada")),
                                      absl::Milliseconds(10));
  auto [follow_up, cancel] = DetachWithBound(call, absl::Milliseconds(200));
  end_call();
  EXPECT_TRUE(call.IsDone());
  EXPECT_FALSE(follow_up.IsDone());
  ASSERT_NE(follow_up.Value(kUser), nullptr);
  EXPECT_EQ(*follow_up.Value(kUser), "ada");
  ASSERT_TRUE(follow_up.Done().WaitFor(kBound));
  EXPECT_EQ(follow_up.Err().code(), absl::StatusCode::kDeadlineExceeded);
  auto [none, c2] = DetachWithBound(call, absl::ZeroDuration());
  EXPECT_TRUE(none.IsDone());
}

TEST(PolicyCountersTest, NamesAreStableAndUnique) {
  std::set<std::string_view> names;
  for (size_t i = 0; i < kPolicyCounterCount; ++i) {
    std::string_view n = PolicyCounterName(static_cast<PolicyCounter>(i));
    EXPECT_NE(n, "unknown");
    EXPECT_TRUE(names.insert(n).second) << n;
  }
  EXPECT_EQ(PolicyCounterName(PolicyCounter::kMinBudgetRejected),
            "min_budget_rejected");
}

}  // namespace
}  // namespace reqctx::policy
