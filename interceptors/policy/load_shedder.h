// LoadShedder: a concurrency limit with a queue that knows deadlines
// (issue 12, section 3), whose limit may adapt (issue 23).
//
// The limit comes from a limits::Limit (//limits): fixed (`max_concurrency`)
// or adaptive (AIMD, Gradient2, Vegas), fed one sample per admitted call
// when its slot is given back -- its handling time (admission to release,
// not the time it queued), the calls in flight when it was admitted, and
// how it ended (ShedSlot::Release's limits::Outcome). The limit algorithm,
// this queue and the refusal cap are separate objects; the shedder holds
// the slots and asks the limit, under its lock, on every decision. It starts
// no thread and no timer of its own (a queued call's end is watched with
// AfterFunc on its Context).
//
// At most `limit` calls run at once; the others wait in a queue of at most
// `max_queue` entries. Every decision is made as early as possible:
//   * On arrival, a call whose expected wait plus expected handling time
//     exceeds its remaining budget is refused at once with
//     RESOURCE_EXHAUSTED and a pushback (how long until a slot is likely to
//     be free), which the server sends as `grpc-retry-pushback-ms`.
//   * A queued call whose Context is done (deadline passed, client canceled)
//     is dropped before it runs, with that Context's error; one whose turn
//     comes with less of its deadline left than its expected handling time
//     is refused then (kShedAtArrival), not run to miss its deadline.
//   * When the queue is full, a more critical arrival evicts the least
//     critical queued call (sheddable first); otherwise the arrival is
//     refused.
//   * More critical calls are served first. Within one criticality the queue
//     is FIFO while it drains quickly, and serves the newest first once its
//     oldest entry has waited longer than `lifo_after` (adaptive LIFO):
//     under sustained overload the calls that can still make their deadline
//     are the ones served.
//   * Criticality shares (`shares`, Netflix's partitioned limiter): each
//     criticality is guaranteed floor(share x limit) slots. Below the limit
//     anyone runs; at the limit, a call still runs if its criticality holds
//     fewer slots than its guarantee -- so sheddable calls use what is idle,
//     and cannot keep critical ones out. The total may then exceed the limit
//     by at most the guarantees (sum of shares <= 1).
//   * Queue-delay admission (`codel_target`, `codel_interval`; CoDel as
//     "Fail at Scale" applies it to server queues): while the queue has not
//     been empty for a whole `codel_interval` (a standing queue), a call may
//     wait at most `codel_target` -- an arrival expected to wait longer is
//     refused at once, and a queued call that waited longer is refused when
//     its turn comes (reason kQueueDelay); otherwise at most
//     `codel_interval`. Standing queues drain even when the limit is right.
// The expected wait for an arrival is (calls ahead of it + 1) x expected
// handling time / limit.
//
// Safety valves (issue 23): the mode (ShedMode; SetMode at run time) --
// kEnforce decides; kDark decides and counts what it would have done
// (ShedDecision::dark) but runs every call at once; kOff (the kill switch)
// runs every call without deciding. Switching away from kEnforce admits
// every queued call at once. In every mode the calls are counted in flight
// and their samples feed the limit, so it keeps learning. A RefusalCap (if
// given) turns a refusal into an admission once the window's refusals reach
// its share (ShedDecision::capped).
//
// An admitted call gets its slot as a ShedSlot token, given back exactly
// once (by ShedSlot::Release or its destructor): a slot cannot be given back
// twice, nor forgotten.
//
// Thread-safety: all methods are safe from any thread. Decisions are
// delivered by calling the `decide` callback exactly once, without any lock
// held, either inside Acquire (run now, or refused) or later on the thread of
// a Release(), a SetMode() or of the Context's AfterFunc (admitted from the
// queue, or dropped). `decide` must not throw. The limit is called under the
// shedder's mutex only (limits::Limit is not thread-safe itself).
// Lifetime: the shedder must outlive every ShedSlot it handed out (until
// it is released) and every call it queued; the destructor refuses
// still-queued calls with UNAVAILABLE. The RefusalCap and PolicyCounters
// given to it must outlive it.
#ifndef REQCTX_INTERCEPTORS_POLICY_LOAD_SHEDDER_H_
#define REQCTX_INTERCEPTORS_POLICY_LOAD_SHEDDER_H_

#include <array>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/core.h"
#include "interceptors/policy/criticality.h"
#include "interceptors/policy/policy_counters.h"
#include "interceptors/policy/refusal_cap.h"
#include "limits/limit.h"
#include "limits/limit_options.h"

namespace reqctx::policy {

// What the shedder does with its decisions (see the header comment).
enum class ShedMode { kEnforce, kDark, kOff };
// "enforce", "dark", "off".
std::string_view ShedModeName(ShedMode m);
// The inverse of ShedModeName; nullopt for any other text.
std::optional<ShedMode> ParseShedMode(std::string_view name);

struct LoadShedderOptions {
  // The fixed limit (limit.algorithm == kFixed; limit.fixed is not read);
  // >= 1 then. Not read by an adaptive algorithm.
  int max_concurrency = 1;
  // Queue length: >= 0; < 0: 4 x the current limit (an adaptive limit's
  // queue follows it); 0: no queue.
  int max_queue = 0;
  absl::Duration lifo_after = absl::Milliseconds(10);  // >= 0
  // The limit algorithm and its parameters (//limits).
  limits::LimitOptions limit;
  // Guaranteed share of the limit per criticality, indexed by Criticality
  // (sheddable, default, critical): each in [0, 1], sum <= 1; all zero: no
  // shares (today's behaviour).
  std::array<double, 3> shares{};
  // Queue-delay admission: zero: off; else > 0, with codel_interval >=
  // codel_target.
  absl::Duration codel_target = absl::ZeroDuration();
  absl::Duration codel_interval = absl::Milliseconds(100);
  // The mode at construction (SetMode changes it).
  ShedMode mode = ShedMode::kEnforce;
  // Monotonic-enough time source for queue waits and samples; null:
  // absl::Now. Tests pass a fake clock.
  std::function<absl::Time()> now;
};

// InvalidArgument naming "<prefix>.<field>" (e.g. "shares[2]",
// "limit.gradient.smoothing") if `o` is out of range.
absl::Status ValidateLoadShedderOptions(const LoadShedderOptions& o,
                                        std::string_view prefix);

// The shedder's state, for metrics.
struct ShedderStats {
  int limit = 0;
  int running = 0;  // slots held (over-limit runs in dark/off/capped too)
  int queued = 0;
  ShedMode mode = ShedMode::kEnforce;
  std::string_view algorithm;
  limits::LimitInputs inputs;
};

// How an admitted call ended, as its limit's sample (limits::Outcome), from
// when its budget is measured (`arrived`: its admission, or earlier to
// count a wait before it against the server -- ServerPolicy adds back the
// time gRPC held the call after reqctx's interceptor saw it), when it
// ended, its deadline (nullopt: none), the handling time expected of it at
// admission, and whether its client canceled it:
//   * still being handled at its deadline: kDropped if the budget it had at
//     `arrived` covered `expected` (it should have fit: the server was
//     slow); else kIgnore -- its own short deadline ended it, which says
//     nothing of the server (a flood of calls whose deadlines are shorter
//     than the handling time must not drive the limit to its minimum);
//   * canceled by its client before its deadline: kIgnore (Netflix's gRPC
//     interceptor ignores cancels);
//   * otherwise kSuccess.
limits::Outcome ClassifyEnd(absl::Time arrived, absl::Time end,
                            std::optional<absl::Time> deadline,
                            absl::Duration expected, bool canceled);

// Why a call did not get a slot (kNone: it did).
enum class ShedReason {
  kNone,
  kShedAtArrival,  // expected wait + handling exceeds the remaining budget
                   // (on arrival, or when its turn in the queue came)
  kQueueFull,      // queue full, nothing less critical to evict
  kEvicted,        // queued, then evicted by a more critical arrival
  kExpired,        // its deadline passed before it could run
  kCanceled,       // its Context was canceled before it could run
  kShutdown,       // the shedder was destroyed while it was queued
  kQueueDelay,     // standing queue: waited (or would wait) > codel_target
};
inline constexpr size_t kShedReasonCount = 8;

class LoadShedder;

// One admitted call's concurrency slot. Move-only; given back exactly once:
// by Release() or, if not released, by the destructor. An empty token (not
// admitted, moved from, released) gives nothing back.
// Thread-safety: one token is used by one thread at a time (as any value);
// tokens of one shedder may be released concurrently.
class ShedSlot {
 public:
  ShedSlot() = default;
  ShedSlot(ShedSlot&& other) noexcept;
  ShedSlot& operator=(ShedSlot&& other) noexcept;
  ShedSlot(const ShedSlot&) = delete;
  ShedSlot& operator=(const ShedSlot&) = delete;
  ~ShedSlot() { Release(limits::Outcome::kIgnore); }

  // True until the slot is given back.
  bool held() const { return shedder_ != nullptr; }
  // Gives the slot back, reporting how the call ended (its sample for the
  // limit: see limits::Outcome); may admit queued calls (their `decide`
  // runs on this thread before Release returns). A no-op if not held. The
  // destructor gives an unreleased slot back as kIgnore (no sample).
  void Release(limits::Outcome outcome = limits::Outcome::kSuccess);

 private:
  friend class LoadShedder;
  ShedSlot(LoadShedder* shedder, absl::Time start, int inflight, Criticality c,
           absl::Duration budget)
      : shedder_(shedder),
        start_(start),
        inflight_(inflight),
        crit_(c),
        budget_(budget) {}
  LoadShedder* shedder_ = nullptr;
  absl::Time start_;       // when admitted
  int inflight_ = 0;       // slots held at admission, this one included
  Criticality crit_ = Criticality::kDefault;
  // What the call's deadline left it when it reached the shedder
  // (limits::Sample::budget): the workload's budget, not what the
  // shedder's own queue left of it -- a queue that a too-low limit makes
  // must not slow the limit's growth.
  absl::Duration budget_ = absl::InfiniteDuration();
};

// What the shedder decided for one call. Move-only (it may carry a slot).
struct ShedDecision {
  // OK: the call holds `slot` until it is done. Otherwise
  // RESOURCE_EXHAUSTED (shed), or the Context's error (dropped from the
  // queue), or UNAVAILABLE (shedder destroyed).
  absl::Status status;
  // For RESOURCE_EXHAUSTED: how long the caller should wait before trying
  // again (>= 1 ms); zero otherwise.
  absl::Duration pushback = absl::ZeroDuration();
  ShedReason reason = ShedReason::kNone;
  // Whether the call waited in the queue, and for how long (from queueing
  // to this decision).
  bool queued = false;
  absl::Duration waited = absl::ZeroDuration();
  // Admitted although the shedder would have refused (kShedAtArrival,
  // kQueueDelay) or queued it (kNone with would_queue): kDark mode.
  std::optional<ShedReason> dark;
  bool would_queue = false;
  // Admitted because the RefusalCap allowed no more refusals: the reason it
  // would have been refused for.
  std::optional<ShedReason> capped;
  // Held iff status is OK: the call's slot.
  ShedSlot slot;
};

class LoadShedder {
 public:
  // `options` must be valid (ValidateLoadShedderOptions; an invalid limit
  // falls back to a fixed limit of max(1, max_concurrency), which Validate
  // would have reported). `counters` and `cap` may be null; if not, they
  // must outlive the shedder. The cap's arrivals are counted by its owner
  // (ServerPolicy counts each call once, before its minimum-budget check);
  // the shedder only asks it before each refusal.
  LoadShedder(LoadShedderOptions options, PolicyCounters* counters,
              RefusalCap* cap = nullptr);
  ~LoadShedder();
  LoadShedder(const LoadShedder&) = delete;
  LoadShedder& operator=(const LoadShedder&) = delete;

  // Asks for a slot for a call bound to `ctx` (its deadline is the budget,
  // its end drops it from the queue) with criticality `c`, expected to take
  // `expected_handling` once running. `decide` is called exactly once (see
  // the header comment).
  void Acquire(const Context& ctx, Criticality c,
               absl::Duration expected_handling,
               std::function<void(ShedDecision)> decide);
  int running() const;
  int queued() const;
  // The limit now.
  int limit() const;
  ShedderStats Stats() const;
  // Changes the mode at run time (the kill switch is SetMode(kOff)).
  // Leaving kEnforce admits every queued call (decided on this thread).
  void SetMode(ShedMode mode);
  ShedMode mode() const;

 private:
  friend class ShedSlot;
  struct Entry;
  using Queue = std::list<std::shared_ptr<Entry>>;

  // Removes `e` from its queue if it is still there; returns whether it was.
  bool RemoveLocked(const std::shared_ptr<Entry>& e);
  // What leaves the queue in one step: calls to admit (their slots taken)
  // and calls refused for queue delay, decided outside the lock.
  struct Batch {
    std::vector<std::pair<std::shared_ptr<Entry>, ShedDecision>> decided;
    std::vector<AfterFuncHandle> handles;  // dropped outside the lock
  };
  // Moves every queued call that may run now to `b` (most critical first,
  // adaptive LIFO, shares), refusing those past the queue-delay bound.
  void DrainLocked(absl::Time now, Batch& b);
  // Runs `b`'s decisions (no lock held).
  void Deliver(Batch& b);
  // Whether a call of criticality `c` may take a slot now (limit, shares).
  bool AdmissibleLocked(Criticality c, int limit) const;
  // The longest a queued call may wait now (CoDel), or InfiniteDuration.
  absl::Duration QueueBoundLocked(absl::Time now) const;
  // A refusal the cap allows (true; counted) or turns into an admission.
  bool MayRefuseLocked(absl::Time now);
  // An OK decision holding a new slot; counts it in running_.
  // Admits a call of criticality `c` now; `deadline` (its Context's) and
  // `arrived` (when it reached the shedder) give its sample's budget.
  ShedDecision AdmitLocked(absl::Time now, Criticality c,
                           std::optional<absl::Time> deadline,
                           absl::Time arrived);
  void OnEntryDone(const std::shared_ptr<Entry>& e);
  void Count(PolicyCounter c, Criticality crit);
  // Gives back one admitted call's slot (ShedSlot::Release, once per
  // token), feeding the limit; may admit queued calls.
  void Release(const ShedSlot& slot, limits::Outcome outcome);
  absl::Time Now() const { return options_.now ? options_.now() : absl::Now(); }

  const LoadShedderOptions options_;
  PolicyCounters* const counters_;
  RefusalCap* const cap_;

  mutable std::mutex mu_;
  std::unique_ptr<limits::Limit> limit_;  // Guarded by mu_.
  ShedMode mode_;                         // Guarded by mu_.
  int running_ = 0;                       // Guarded by mu_.
  std::array<int, 3> running_by_{};       // By Criticality. Guarded by mu_.
  int queued_ = 0;                        // Guarded by mu_.
  absl::Time last_empty_;                 // Queue last empty. Guarded by mu_.
  std::array<Queue, 3> queues_;           // By Criticality. Guarded by mu_.
};

}  // namespace reqctx::policy

#endif  // REQCTX_INTERCEPTORS_POLICY_LOAD_SHEDDER_H_
