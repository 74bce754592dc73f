// Orphaned-work detection: work (a request handler, a Group task, an
// AfterFunc) still running a while after its Context is done, i.e. work
// nobody is waiting for any more. Off by default.
//
//   reqctx::OrphanDetectorOptions options;
//   options.threshold = absl::Seconds(1);
//   options.reporter = [](const reqctx::OrphanReport& r) { ... };
//   reqctx::EnableOrphanDetector(options);
//
//   {  // Around work that should stop when ctx is done:
//     reqctx::OrphanWatch watch(ctx, "handler", method);
//     DoWork(ctx);
//   }
//
// While enabled, one detector thread scans the watched work every
// threshold/4 (at least 1 ms, at most 250 ms apart); work whose Context it
// has seen done for at least `threshold` is reported once (the reporter is
// called on the detector thread, never under a lock) and counted. Group
// tasks ("group_task") and AfterFuncs ("after_func") are watched by the core
// itself; the gRPC glue watches handlers ("handler", named by method).
//
// Cost: disabled, an OrphanWatch is one relaxed atomic load. Enabled, it
// links itself into one of a few sharded lists (a short lock) and unlinks
// on destruction.
//
// Thread-safety: everything is safe from any thread. Enable/Disable may race
// with watches being made; a watch made while disabled stays inert.
//
// Lifetime: `kind` and `name` must outlive the watch (string literals, a
// gRPC method name). The detector's state is never destroyed, so watches in
// static destructors are safe; Disable joins the detector thread.
#ifndef REQCTX_CONTEXT_ORPHANS_H_
#define REQCTX_CONTEXT_ORPHANS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx {

// One piece of orphaned work, as reported (once) by the detector.
struct OrphanReport {
  std::string_view kind;    // "handler", "group_task", "after_func", ...
  std::string_view name;    // e.g. the gRPC method; "" if none.
  const Context& ctx;       // The work's Context (done).
  absl::Duration done_for;  // >= the threshold: how long it has been done.
};

struct OrphanDetectorOptions {
  // Work still running this long after its Context is done is reported.
  absl::Duration threshold = absl::Seconds(1);
  // Called once per orphan on the detector thread; must not block for long
  // and must not call Enable/DisableOrphanDetector. nullptr: one line on
  // stderr with kind, name, done_for and the Context's DebugString.
  std::function<void(const OrphanReport&)> reporter;
};

// Turns the detector on, or replaces its options if it is on. Errors:
// kInvalidArgument for a threshold that is not positive and finite;
// kResourceExhausted if the detector thread cannot start.
absl::Status EnableOrphanDetector(OrphanDetectorOptions options);
// Turns it off and joins its thread. Existing watches stay linked but are
// not reported while it is off. Idempotent.
void DisableOrphanDetector();
bool OrphanDetectorEnabled();

// Marks work running under `ctx` for the watch's lifetime.
class OrphanWatch {
 public:
  OrphanWatch(const Context& ctx, std::string_view kind, std::string_view name);
  ~OrphanWatch();
  OrphanWatch(const OrphanWatch&) = delete;
  OrphanWatch& operator=(const OrphanWatch&) = delete;

  // Detector-internal state (guarded by the shard's lock).
  struct Links {
    OrphanWatch* prev = nullptr;
    OrphanWatch* next = nullptr;
    int64_t done_seen_ns = 0;  // Monotonic ns the scan first saw it done.
    bool reported = false;
  };

 private:
  friend class OrphanDetector;
  Context ctx_;
  std::string_view kind_;
  std::string_view name_;
  int shard_ = -1;  // -1: not linked.
  Links links_;
};

namespace debug {
// Watched work of `kind` whose Context was done at the detector's last scan
// (0 while the detector is off).
size_t OrphanedWorkCount(std::string_view kind);
// Reports made since the process began.
int64_t OrphanReportCount();
}  // namespace debug

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_ORPHANS_H_
