#include "interceptors/policy/load_shedder.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "ledger/causes.h"
#include "limits/fixed_limit.h"

namespace reqctx::policy {

struct LoadShedder::Entry {
  Context ctx;
  Criticality criticality;
  absl::Time enqueued;
  absl::Duration expected;  // its expected handling time
  std::function<void(ShedDecision)> decide;
  AfterFuncHandle on_done;  // Set under mu_ right after queueing.
  bool in_queue = false;    // Guarded by mu_.
  Queue::iterator pos;      // Valid while in_queue. Guarded by mu_.
};

std::string_view ShedModeName(ShedMode m) {
  switch (m) {
    case ShedMode::kEnforce:
      return "enforce";
    case ShedMode::kDark:
      return "dark";
    case ShedMode::kOff:
      return "off";
  }
  return "unknown";
}

std::optional<ShedMode> ParseShedMode(std::string_view name) {
  for (ShedMode m : {ShedMode::kEnforce, ShedMode::kDark, ShedMode::kOff}) {
    if (name == ShedModeName(m)) return m;
  }
  return std::nullopt;
}

absl::Status ValidateLoadShedderOptions(const LoadShedderOptions& o,
                                        std::string_view prefix) {
  auto bad = [&](std::string_view field, std::string_view why) {
    return limits::BadOption(prefix, field, why);
  };
  if (o.limit.algorithm == limits::Algorithm::kFixed &&
      o.max_concurrency < 1) {
    return bad("max_concurrency", "must be >= 1 with a fixed limit");
  }
  if (o.lifo_after < absl::ZeroDuration()) {
    return bad("lifo_after", "must be >= 0");
  }
  if (o.limit.algorithm != limits::Algorithm::kFixed) {
    if (absl::Status s = limits::ValidateLimitOptions(
            o.limit, std::string(prefix) + ".limit");
        !s.ok()) {
      return s;
    }
  }
  double sum = 0;
  for (size_t i = 0; i < o.shares.size(); ++i) {
    if (!(o.shares[i] >= 0 && o.shares[i] <= 1)) {
      return bad("shares[" + std::to_string(i) + "]", "must be in [0, 1]");
    }
    sum += o.shares[i];
  }
  if (sum > 1 + 1e-9) return bad("shares", "must sum to <= 1");
  if (o.codel_target < absl::ZeroDuration()) {
    return bad("codel_target", "must be >= 0");
  }
  if (o.codel_target > absl::ZeroDuration() &&
      o.codel_interval < o.codel_target) {
    return bad("codel_interval", "must be >= codel_target");
  }
  switch (o.mode) {
    case ShedMode::kEnforce:
    case ShedMode::kDark:
    case ShedMode::kOff:
      break;
    default:
      return bad("mode", "unknown value");
  }
  return absl::OkStatus();
}

limits::Outcome ClassifyEnd(absl::Time arrived, absl::Time end,
                            std::optional<absl::Time> deadline,
                            absl::Duration expected, bool canceled) {
  if (deadline.has_value() && end >= *deadline) {
    return *deadline - arrived >= expected ? limits::Outcome::kDropped
                                           : limits::Outcome::kIgnore;
  }
  return canceled ? limits::Outcome::kIgnore : limits::Outcome::kSuccess;
}

namespace {

size_t Index(Criticality c) { return static_cast<size_t>(c); }

// The counter of a refusal for `reason` (RESOURCE_EXHAUSTED ones).
PolicyCounter RefusalCounter(ShedReason reason) {
  switch (reason) {
    case ShedReason::kShedAtArrival:
      return PolicyCounter::kShedAtArrival;
    case ShedReason::kQueueDelay:
      return PolicyCounter::kShedQueueDelay;
    default:
      return PolicyCounter::kShedQueueFull;
  }
}

ShedDecision Shed(absl::Duration pushback, ShedReason reason,
                  const char* why) {
  ShedDecision d;
  d.status = MarkCause(absl::ResourceExhaustedError(why), CauseKind::kShed);
  d.pushback = std::max(pushback, absl::Milliseconds(1));
  d.reason = reason;
  return d;
}

// A decision that is not a slot: `status` for `reason`.
ShedDecision NotAdmitted(absl::Status status, ShedReason reason) {
  ShedDecision d;
  d.status = std::move(status);
  d.reason = reason;
  return d;
}

// A call whose Context ended (before or while queued): its error, and
// whether that was its deadline or a cancel.
ShedDecision Ended(const Context& ctx) {
  absl::Status err = ctx.Err();
  const ShedReason reason = err.code() == absl::StatusCode::kDeadlineExceeded
                                ? ShedReason::kExpired
                                : ShedReason::kCanceled;
  return NotAdmitted(std::move(err), reason);
}

// `d` for a call that waited in the queue from `enqueued` to `now`.
ShedDecision AfterQueue(ShedDecision d, absl::Time enqueued, absl::Time now) {
  d.queued = true;
  d.waited = now - enqueued;
  return d;
}

std::unique_ptr<limits::Limit> MakeShedderLimit(const LoadShedderOptions& o) {
  limits::LimitOptions l = o.limit;
  if (l.algorithm == limits::Algorithm::kFixed) l.fixed = o.max_concurrency;
  absl::StatusOr<std::unique_ptr<limits::Limit>> made = limits::MakeLimit(l);
  if (made.ok()) return *std::move(made);
  return std::make_unique<limits::FixedLimit>(std::max(o.max_concurrency, 1));
}

}  // namespace

ShedSlot::ShedSlot(ShedSlot&& other) noexcept
    : shedder_(std::exchange(other.shedder_, nullptr)),
      start_(other.start_),
      inflight_(other.inflight_),
      crit_(other.crit_),
      budget_(other.budget_) {}

ShedSlot& ShedSlot::operator=(ShedSlot&& other) noexcept {
  if (this != &other) {
    Release(limits::Outcome::kIgnore);
    shedder_ = std::exchange(other.shedder_, nullptr);
    start_ = other.start_;
    inflight_ = other.inflight_;
    crit_ = other.crit_;
    budget_ = other.budget_;
  }
  return *this;
}

void ShedSlot::Release(limits::Outcome outcome) {
  if (LoadShedder* s = std::exchange(shedder_, nullptr)) {
    s->Release(*this, outcome);
  }
}

LoadShedder::LoadShedder(LoadShedderOptions options, PolicyCounters* counters,
                         RefusalCap* cap)
    : options_(std::move(options)),
      counters_(counters),
      cap_(cap),
      limit_(MakeShedderLimit(options_)),
      mode_(options_.mode),
      last_empty_(Now()) {}

LoadShedder::~LoadShedder() {
  std::vector<std::shared_ptr<Entry>> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (Queue& q : queues_) {
      for (auto& e : q) {
        e->in_queue = false;
        left.push_back(e);
      }
      q.clear();
    }
    queued_ = 0;
  }
  const absl::Time now = Now();
  for (auto& e : left) {
    AfterFuncHandle h;
    {
      std::lock_guard<std::mutex> lock(mu_);
      h = std::move(e->on_done);
    }
    h = AfterFuncHandle();  // Stops it, or waits for it.
    e->decide(AfterQueue(NotAdmitted(MarkCause(absl::UnavailableError(
                                                   "server shutting down"),
                                               CauseKind::kServerShutdown),
                                     ShedReason::kShutdown),
                         e->enqueued, now));
  }
}

void LoadShedder::Count(PolicyCounter c, Criticality crit) {
  if (counters_ == nullptr) return;
  counters_->Add(c);
  if (crit == Criticality::kSheddable &&
      (c == PolicyCounter::kShedAtArrival ||
       c == PolicyCounter::kShedQueueFull ||
       c == PolicyCounter::kShedEvicted || c == PolicyCounter::kShedExpired ||
       c == PolicyCounter::kShedQueueDelay)) {
    counters_->Add(PolicyCounter::kShedSheddable);
  }
}

bool LoadShedder::AdmissibleLocked(Criticality c, int limit) const {
  if (running_ < limit) return true;
  const double share = options_.shares[Index(c)];
  return share > 0 &&
         running_by_[Index(c)] < static_cast<int>(std::floor(share * limit));
}

absl::Duration LoadShedder::QueueBoundLocked(absl::Time now) const {
  if (options_.codel_target <= absl::ZeroDuration()) {
    return absl::InfiniteDuration();
  }
  const bool standing =
      queued_ > 0 && now - last_empty_ > options_.codel_interval;
  return standing ? options_.codel_target : options_.codel_interval;
}

bool LoadShedder::MayRefuseLocked(absl::Time now) {
  if (cap_ == nullptr || cap_->TryRefuse(now)) return true;
  if (counters_ != nullptr) counters_->Add(PolicyCounter::kRefusalsCapped);
  return false;
}

ShedDecision LoadShedder::AdmitLocked(absl::Time now, Criticality c,
                                      std::optional<absl::Time> deadline,
                                      absl::Time arrived) {
  ++running_;
  ++running_by_[Index(c)];
  ShedDecision d;
  d.slot = ShedSlot(this, now, running_, c,
                    deadline.has_value() ? *deadline - arrived
                                         : absl::InfiniteDuration());
  return d;
}

void LoadShedder::Acquire(const Context& ctx, Criticality c,
                          absl::Duration expected_handling,
                          std::function<void(ShedDecision)> decide) {
  if (!ctx.Err().ok()) {
    Count(PolicyCounter::kShedExpired, c);
    decide(Ended(ctx));
    return;
  }
  const absl::Time now = Now();
  expected_handling = std::max(expected_handling, absl::ZeroDuration());
  std::optional<ShedDecision> now_decided;
  std::shared_ptr<Entry> e;
  // Evicted calls and their drop-on-done handles (dropped outside the lock).
  std::vector<std::pair<std::shared_ptr<Entry>, AfterFuncHandle>> evicted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const int limit = limit_->Current();
    if (mode_ == ShedMode::kOff) {
      now_decided = AdmitLocked(now, c, ctx.Deadline(), now);
    } else {
      // Calls served before this one: every queued call at least as
      // critical (a newest-first queue may serve this one earlier; this errs
      // on the side of refusing early).
      int ahead = 0;
      for (size_t i = Index(c); i < queues_.size(); ++i) {
        ahead += static_cast<int>(queues_[i].size());
      }
      if (queued_ == 0) last_empty_ = now;
      const absl::Duration wait = expected_handling * (ahead + 1) / limit;
      const std::optional<absl::Time> deadline = ctx.Deadline();
      std::optional<ShedReason> refuse;
      bool queue = false;
      bool cap_blocked = false;  // the cap already said no to a refusal
      const int max_queue =
          options_.max_queue >= 0 ? options_.max_queue : 4 * limit;
      if (ahead == 0 && AdmissibleLocked(c, limit)) {
        // Runs now.
      } else if (deadline.has_value() &&
                 now + wait + expected_handling > *deadline) {
        refuse = ShedReason::kShedAtArrival;
      } else if (wait > QueueBoundLocked(now)) {
        refuse = ShedReason::kQueueDelay;
      } else if (mode_ == ShedMode::kDark) {
        queue = true;  // what it would do; dark mode runs it instead
      } else {
        // Evict the oldest of the least critical queued calls, if less
        // critical than this one, until there is room (a refusal of each:
        // capped too). More than one when the queue's bound fell with an
        // adaptive limit: a critical call must not be refused for the
        // sheddable calls a higher limit queued.
        while (queued_ >= max_queue && !cap_blocked) {
          size_t i = 0;
          while (i < Index(c) && queues_[i].empty()) ++i;
          if (i >= Index(c)) break;  // nothing less critical queued
          if (!MayRefuseLocked(now)) {
            cap_blocked = true;  // no refusal left: this call will run
            break;
          }
          std::shared_ptr<Entry> victim = queues_[i].front();
          RemoveLocked(victim);
          AfterFuncHandle h = std::move(victim->on_done);
          evicted.emplace_back(std::move(victim), std::move(h));
        }
        if (queued_ >= max_queue) {
          refuse = ShedReason::kQueueFull;
        } else {
          queue = true;
        }
      }
      if (mode_ == ShedMode::kDark) {
        now_decided = AdmitLocked(now, c, deadline, now);
        now_decided->dark = refuse;
        now_decided->would_queue = queue;
      } else if (refuse.has_value()) {
        if (!cap_blocked && MayRefuseLocked(now)) {
          switch (*refuse) {
            case ShedReason::kShedAtArrival:
              now_decided = Shed(
                  wait, *refuse,
                  "overloaded: expected wait exceeds the deadline");
              break;
            case ShedReason::kQueueDelay:
              now_decided =
                  Shed(wait, *refuse,
                       "overloaded: standing queue, expected wait exceeds "
                       "its target");
              break;
            default:
              now_decided = Shed(wait, *refuse, "overloaded: queue full");
              break;
          }
        } else {
          now_decided = AdmitLocked(now, c, deadline, now);
          now_decided->capped = refuse;
        }
      } else if (queue) {
        e = std::make_shared<Entry>();
        e->ctx = ctx;
        e->criticality = c;
        e->enqueued = now;
        e->expected = expected_handling;
        e->decide = std::move(decide);
        Queue& q = queues_[Index(c)];
        e->pos = q.insert(q.end(), e);
        e->in_queue = true;
        ++queued_;
      } else {
        now_decided = AdmitLocked(now, c, deadline, now);
      }
    }
  }
  if (now_decided.has_value()) {
    switch (now_decided->reason) {
      case ShedReason::kNone:
        if (counters_ != nullptr) {
          counters_->Add(PolicyCounter::kAdmitted);
          if (now_decided->dark.has_value() || now_decided->would_queue) {
            counters_->Add(PolicyCounter::kDarkDecisions);
          }
        }
        break;
      default:
        Count(RefusalCounter(now_decided->reason), c);
        break;
    }
    decide(*std::move(now_decided));
  } else {
    if (counters_ != nullptr) counters_->Add(PolicyCounter::kQueued);
    // Armed after queueing: if ctx is done already, f runs at once and
    // drops the entry. The handle is stored under mu_ (the admit and evict
    // paths take it from there); if the entry already left the queue, the
    // handle is dropped here instead, outside the lock.
    AfterFuncHandle h = AfterFunc(ctx, [this, e] { OnEntryDone(e); });
    std::lock_guard<std::mutex> lock(mu_);
    if (e->in_queue) e->on_done = std::move(h);
  }
  for (auto& [victim, on_done] : evicted) {
    on_done = AfterFuncHandle();  // Stops it, or waits for it.
    Count(PolicyCounter::kShedEvicted, victim->criticality);
    victim->decide(AfterQueue(
        Shed(expected_handling, ShedReason::kEvicted,
             "overloaded: evicted by a more critical call"),
        victim->enqueued, now));
  }
}

bool LoadShedder::RemoveLocked(const std::shared_ptr<Entry>& e) {
  if (!e->in_queue) return false;
  queues_[Index(e->criticality)].erase(e->pos);
  e->in_queue = false;
  --queued_;
  return true;
}

void LoadShedder::DrainLocked(absl::Time now, Batch& b) {
  const int limit = limit_->Current();
  const absl::Duration bound = QueueBoundLocked(now);
  const bool enforce = mode_ == ShedMode::kEnforce;
  for (size_t i = queues_.size(); i-- > 0;) {
    Queue& q = queues_[i];
    const Criticality c = static_cast<Criticality>(i);
    while (!q.empty() && (!enforce || AdmissibleLocked(c, limit))) {
      std::shared_ptr<Entry> e =
          now - q.front()->enqueued > options_.lifo_after ? q.back()
                                                          : q.front();
      RemoveLocked(e);
      b.handles.push_back(std::move(e->on_done));
      // Its turn came too late to finish by its deadline: a slot spent on it
      // would be wasted (and its end read as a drop).
      const std::optional<absl::Time> deadline = e->ctx.Deadline();
      if (enforce && deadline.has_value() && now + e->expected > *deadline &&
          MayRefuseLocked(now)) {
        b.decided.emplace_back(
            e, AfterQueue(Shed(e->expected, ShedReason::kShedAtArrival,
                               "overloaded: too little of its deadline left "
                               "when its turn came"),
                          e->enqueued, now));
        continue;
      }
      if (enforce && now - e->enqueued > bound && MayRefuseLocked(now)) {
        b.decided.emplace_back(
            e, AfterQueue(Shed(now - e->enqueued, ShedReason::kQueueDelay,
                               "overloaded: standing queue, waited longer "
                               "than its target"),
                          e->enqueued, now));
        continue;
      }
      b.decided.emplace_back(
          e, AfterQueue(AdmitLocked(now, c, deadline, e->enqueued),
                        e->enqueued, now));
    }
  }
  if (queued_ == 0) last_empty_ = now;
}

void LoadShedder::Deliver(Batch& b) {
  // Stop (or wait for) each drop-on-done function: it finds its entry gone.
  b.handles.clear();
  for (auto& [e, d] : b.decided) {
    if (d.status.ok()) {
      if (counters_ != nullptr) counters_->Add(PolicyCounter::kAdmitted);
    } else {
      Count(RefusalCounter(d.reason), e->criticality);
    }
    e->decide(std::move(d));
  }
}

void LoadShedder::Release(const ShedSlot& slot, limits::Outcome outcome) {
  const absl::Time now = Now();
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Only a ShedSlot calls this, once per slot it holds: running_ counts
    // the tokens held, so it cannot go below zero.
    assert(running_ > 0);
    --running_;
    --running_by_[Index(slot.crit_)];
    if (outcome != limits::Outcome::kIgnore) {
      limits::Sample s;
      s.start = slot.start_;
      s.rtt = std::max(now - slot.start_, absl::ZeroDuration());
      s.inflight = slot.inflight_;
      s.dropped = outcome == limits::Outcome::kDropped;
      s.budget = slot.budget_;
      limit_->OnSample(s);
    }
    DrainLocked(now, b);
  }
  Deliver(b);
}

void LoadShedder::SetMode(ShedMode mode) {
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu_);
    mode_ = mode;
    if (mode != ShedMode::kEnforce) DrainLocked(Now(), b);
  }
  Deliver(b);
}

ShedMode LoadShedder::mode() const {
  std::lock_guard<std::mutex> lock(mu_);
  return mode_;
}

void LoadShedder::OnEntryDone(const std::shared_ptr<Entry>& e) {
  AfterFuncHandle self;  // Dropped inside f: does not wait (breaks the cycle
                         // entry -> handle -> f -> entry).
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!RemoveLocked(e)) return;  // Admitted, evicted or drained already.
    self = std::move(e->on_done);
    if (queued_ == 0) last_empty_ = Now();
  }
  Count(PolicyCounter::kShedExpired, e->criticality);
  e->decide(AfterQueue(Ended(e->ctx), e->enqueued, Now()));
}

int LoadShedder::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

int LoadShedder::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_;
}

int LoadShedder::limit() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limit_->Current();
}

ShedderStats LoadShedder::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  ShedderStats s;
  s.limit = limit_->Current();
  s.running = running_;
  s.queued = queued_;
  s.mode = mode_;
  s.algorithm = limit_->Name();
  s.inputs = limit_->Inputs();
  return s;
}

}  // namespace reqctx::policy
