#include "interceptors/policy/load_shedder.h"

#include <algorithm>
#include <cassert>
#include <optional>
#include <vector>
#include <utility>

#include "absl/time/clock.h"

namespace reqctx::policy {

struct LoadShedder::Entry {
  Context ctx;
  Criticality criticality;
  absl::Time enqueued;
  std::function<void(ShedDecision)> decide;
  AfterFuncHandle on_done;  // Set under mu_ right after queueing.
  bool in_queue = false;    // Guarded by mu_.
  Queue::iterator pos;      // Valid while in_queue. Guarded by mu_.
};

namespace {

size_t Index(Criticality c) { return static_cast<size_t>(c); }

ShedDecision Shed(absl::Duration pushback, ShedReason reason,
                  const char* why) {
  ShedDecision d;
  d.status = absl::ResourceExhaustedError(why);
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

// `d` for a call that waited in the queue since `enqueued`.
ShedDecision AfterQueue(ShedDecision d, absl::Time enqueued) {
  d.queued = true;
  d.waited = absl::Now() - enqueued;
  return d;
}

}  // namespace

ShedSlot::ShedSlot(ShedSlot&& other) noexcept
    : shedder_(std::exchange(other.shedder_, nullptr)) {}

ShedSlot& ShedSlot::operator=(ShedSlot&& other) noexcept {
  if (this != &other) {
    Release();
    shedder_ = std::exchange(other.shedder_, nullptr);
  }
  return *this;
}

void ShedSlot::Release() {
  if (LoadShedder* s = std::exchange(shedder_, nullptr)) s->Release();
}

LoadShedder::LoadShedder(LoadShedderOptions options, PolicyCounters* counters)
    : options_([&] {
        options.max_concurrency = std::max(options.max_concurrency, 1);
        if (options.max_queue < 0) {
          options.max_queue = 4 * options.max_concurrency;
        }
        return options;
      }()),
      counters_(counters) {}

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
  for (auto& e : left) {
    AfterFuncHandle h;
    {
      std::lock_guard<std::mutex> lock(mu_);
      h = std::move(e->on_done);
    }
    h = AfterFuncHandle();  // Stops it, or waits for it.
    e->decide(AfterQueue(NotAdmitted(absl::UnavailableError(
                                          "server shutting down"),
                                      ShedReason::kShutdown),
                         e->enqueued));
  }
}

void LoadShedder::Count(PolicyCounter c, Criticality crit) {
  if (counters_ == nullptr) return;
  counters_->Add(c);
  if (crit == Criticality::kSheddable &&
      (c == PolicyCounter::kShedAtArrival ||
       c == PolicyCounter::kShedQueueFull ||
       c == PolicyCounter::kShedEvicted || c == PolicyCounter::kShedExpired)) {
    counters_->Add(PolicyCounter::kShedSheddable);
  }
}

void LoadShedder::Acquire(const Context& ctx, Criticality c,
                          absl::Duration expected_handling,
                          std::function<void(ShedDecision)> decide) {
  if (!ctx.Err().ok()) {
    Count(PolicyCounter::kShedExpired, c);
    decide(Ended(ctx));
    return;
  }
  const absl::Time now = absl::Now();
  expected_handling = std::max(expected_handling, absl::ZeroDuration());
  enum class Outcome { kRun, kQueued, kShedLate, kShedFull } outcome;
  absl::Duration wait = absl::ZeroDuration();
  std::shared_ptr<Entry> e;
  std::shared_ptr<Entry> evicted;
  AfterFuncHandle evicted_on_done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Calls served before this one: every queued call at least as critical
    // (a newest-first queue may serve this one earlier; this errs on the
    // side of refusing early).
    int ahead = 0;
    for (size_t i = Index(c); i < queues_.size(); ++i) {
      ahead += static_cast<int>(queues_[i].size());
    }
    wait = expected_handling * (ahead + 1) / options_.max_concurrency;
    const std::optional<absl::Time> deadline = ctx.Deadline();
    if (running_ < options_.max_concurrency && ahead == 0) {
      ++running_;
      outcome = Outcome::kRun;
    } else if (deadline.has_value() &&
               now + wait + expected_handling > *deadline) {
      outcome = Outcome::kShedLate;
    } else {
      if (queued_ >= options_.max_queue) {
        // Evict the oldest of the least critical queued calls, if less
        // critical than this one.
        for (size_t i = 0; i < Index(c); ++i) {
          if (!queues_[i].empty()) {
            evicted = queues_[i].front();
            RemoveLocked(evicted);
            evicted_on_done = std::move(evicted->on_done);
            break;
          }
        }
      }
      if (queued_ >= options_.max_queue) {
        outcome = Outcome::kShedFull;
      } else {
        outcome = Outcome::kQueued;
        e = std::make_shared<Entry>();
        e->ctx = ctx;
        e->criticality = c;
        e->enqueued = now;
        e->decide = std::move(decide);
        Queue& q = queues_[Index(c)];
        e->pos = q.insert(q.end(), e);
        e->in_queue = true;
        ++queued_;
      }
    }
  }
  switch (outcome) {
    case Outcome::kRun:
      if (counters_ != nullptr) counters_->Add(PolicyCounter::kAdmitted);
      decide(Admitted());
      break;
    case Outcome::kShedLate:
      Count(PolicyCounter::kShedAtArrival, c);
      decide(Shed(wait, ShedReason::kShedAtArrival,
                  "overloaded: expected wait exceeds the deadline"));
      break;
    case Outcome::kShedFull:
      Count(PolicyCounter::kShedQueueFull, c);
      decide(Shed(wait, ShedReason::kQueueFull, "overloaded: queue full"));
      break;
    case Outcome::kQueued: {
      if (counters_ != nullptr) counters_->Add(PolicyCounter::kQueued);
      // Armed after queueing: if ctx is done already, f runs at once and
      // drops the entry. The handle is stored under mu_ (the admit and evict
      // paths take it from there); if the entry already left the queue, the
      // handle is dropped here instead, outside the lock.
      AfterFuncHandle h = AfterFunc(ctx, [this, e] { OnEntryDone(e); });
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (e->in_queue) e->on_done = std::move(h);
      }
      break;
    }
  }
  if (evicted != nullptr) {
    evicted_on_done = AfterFuncHandle();  // Stops it, or waits for it.
    Count(PolicyCounter::kShedEvicted, evicted->criticality);
    evicted->decide(AfterQueue(
        Shed(expected_handling, ShedReason::kEvicted,
             "overloaded: evicted by a more critical call"),
        evicted->enqueued));
  }
}

bool LoadShedder::RemoveLocked(const std::shared_ptr<Entry>& e) {
  if (!e->in_queue) return false;
  queues_[Index(e->criticality)].erase(e->pos);
  e->in_queue = false;
  --queued_;
  return true;
}

std::shared_ptr<LoadShedder::Entry> LoadShedder::PopNextLocked(
    absl::Time now) {
  for (size_t i = queues_.size(); i-- > 0;) {
    Queue& q = queues_[i];
    if (q.empty()) continue;
    std::shared_ptr<Entry> e =
        now - q.front()->enqueued > options_.lifo_after ? q.back() : q.front();
    RemoveLocked(e);
    return e;
  }
  return nullptr;
}

void LoadShedder::Release() {
  std::shared_ptr<Entry> next;
  AfterFuncHandle h;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Only a ShedSlot calls this, once per slot it holds: running_ counts
    // the tokens held, so it cannot go below zero.
    assert(running_ > 0);
    next = PopNextLocked(absl::Now());
    if (next == nullptr) {
      --running_;
      return;
    }
    // The slot passes to `next`; running_ is unchanged.
    h = std::move(next->on_done);
  }
  // Stop (or wait for) the drop-on-done function: it finds the entry gone.
  h = AfterFuncHandle();
  if (counters_ != nullptr) counters_->Add(PolicyCounter::kAdmitted);
  next->decide(AfterQueue(Admitted(), next->enqueued));
}

void LoadShedder::OnEntryDone(const std::shared_ptr<Entry>& e) {
  AfterFuncHandle self;  // Dropped inside f: does not wait (breaks the cycle
                         // entry -> handle -> f -> entry).
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!RemoveLocked(e)) return;  // Admitted, evicted or drained already.
    self = std::move(e->on_done);
  }
  Count(PolicyCounter::kShedExpired, e->criticality);
  e->decide(AfterQueue(Ended(e->ctx), e->enqueued));
}

ShedDecision LoadShedder::Admitted() {
  ShedDecision d;
  d.slot = ShedSlot(this);
  return d;
}

int LoadShedder::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

int LoadShedder::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queued_;
}

}  // namespace reqctx::policy
