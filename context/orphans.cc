#include "context/orphans.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "context/internal/thread_start.h"

namespace reqctx {
namespace {

constexpr int kShards = 8;

int64_t MonoNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void DefaultReporter(const OrphanReport& r) {
  std::fprintf(stderr,
               "reqctx: orphaned %.*s %.*s still running %.3f s after its "
               "Context was done: %s\n",
               static_cast<int>(r.kind.size()), r.kind.data(),
               static_cast<int>(r.name.size()), r.name.data(),
               absl::ToDoubleSeconds(r.done_for), r.ctx.DebugString().c_str());
}

// The kinds counted apart by debug::OrphanedWorkCount; others go in kOther.
enum KindIndex { kHandler, kGroupTask, kAfterFunc, kOther, kKinds };
KindIndex IndexOf(std::string_view kind) {
  if (kind == "handler") return kHandler;
  if (kind == "group_task") return kGroupTask;
  if (kind == "after_func") return kAfterFunc;
  return kOther;
}

}  // namespace

// The process's detector: sharded lists of watches and the scanning thread.
class OrphanDetector {
 public:
  static OrphanDetector& Get() {
    static OrphanDetector* const d = new OrphanDetector();  // Never destroyed.
    return *d;
  }

  std::atomic<bool> enabled{false};
  std::atomic<int64_t> reports{0};
  std::atomic<size_t> orphaned[kKinds] = {};

  void Link(OrphanWatch* w) {
    thread_local const int shard = static_cast<int>(
        std::hash<std::thread::id>()(std::this_thread::get_id()) % kShards);
    Shard& s = shards_[shard];
    std::lock_guard<std::mutex> lock(s.mu);
    w->shard_ = shard;
    w->links_.next = s.head;
    if (s.head != nullptr) s.head->links_.prev = w;
    s.head = w;
  }

  void Unlink(OrphanWatch* w) {
    Shard& s = shards_[w->shard_];
    std::lock_guard<std::mutex> lock(s.mu);
    OrphanWatch::Links& l = w->links_;
    if (l.prev != nullptr) {
      l.prev->links_.next = l.next;
    } else {
      s.head = l.next;
    }
    if (l.next != nullptr) l.next->links_.prev = l.prev;
  }

  absl::Status Enable(OrphanDetectorOptions options) {
    if (!(options.threshold > absl::ZeroDuration()) ||
        options.threshold == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(
          "orphan detector: threshold must be positive and finite");
    }
    if (!options.reporter) options.reporter = DefaultReporter;
    std::lock_guard<std::mutex> control(control_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      options_ = std::move(options);
      stop_ = false;
    }
    if (!thread_.joinable()) {
      try {
        thread_ = internal::StartThread([this] { Loop(); });
      } catch (...) {
        return absl::ResourceExhaustedError(
            "orphan detector: cannot start its thread");
      }
    }
    enabled.store(true);
    cv_.notify_all();
    return absl::OkStatus();
  }

  void Disable() {
    std::lock_guard<std::mutex> control(control_mu_);
    enabled.store(false);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    for (auto& c : orphaned) c.store(0);
  }

 private:
  struct alignas(64) Shard {
    std::mutex mu;
    OrphanWatch* head = nullptr;  // Guarded by mu.
  };
  struct Pending {
    Context ctx;
    std::string kind;
    std::string name;
    absl::Duration done_for;
  };

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      const absl::Duration threshold = options_.threshold;
      const auto reporter = options_.reporter;
      lock.unlock();
      Scan(threshold, reporter);
      lock.lock();
      const absl::Duration period = std::clamp(
          threshold / 4, absl::Milliseconds(1), absl::Milliseconds(250));
      cv_.wait_for(lock, absl::ToChronoNanoseconds(period),
                   [this] { return stop_; });
    }
  }

  void Scan(absl::Duration threshold,
            const std::function<void(const OrphanReport&)>& reporter) {
    const int64_t now = MonoNowNs();
    const int64_t threshold_ns = absl::ToInt64Nanoseconds(threshold);
    size_t counts[kKinds] = {};
    std::vector<Pending> due;
    for (Shard& s : shards_) {
      std::lock_guard<std::mutex> lock(s.mu);
      for (OrphanWatch* w = s.head; w != nullptr; w = w->links_.next) {
        if (!w->ctx_.IsDone()) continue;
        ++counts[IndexOf(w->kind_)];
        OrphanWatch::Links& l = w->links_;
        if (l.done_seen_ns == 0) l.done_seen_ns = now;
        if (l.reported || now - l.done_seen_ns < threshold_ns) continue;
        l.reported = true;
        // Copied: the watch may end as soon as the lock is released.
        due.push_back(Pending{w->ctx_, std::string(w->kind_),
                              std::string(w->name_),
                              absl::Nanoseconds(now - l.done_seen_ns)});
      }
    }
    for (int k = 0; k < kKinds; ++k) orphaned[k].store(counts[k]);
    for (const Pending& p : due) {
      reports.fetch_add(1);
      reporter(OrphanReport{p.kind, p.name, p.ctx, p.done_for});
    }
  }

  Shard shards_[kShards];
  std::mutex control_mu_;  // Serializes Enable/Disable (thread start/join).
  std::mutex mu_;
  std::condition_variable cv_;
  OrphanDetectorOptions options_;  // Guarded by mu_.
  bool stop_ = false;              // Guarded by mu_.
  std::thread thread_;             // Guarded by control_mu_.
};

OrphanWatch::OrphanWatch(const Context& ctx, std::string_view kind,
                         std::string_view name)
    : kind_(kind), name_(name) {
  OrphanDetector& d = OrphanDetector::Get();
  if (!d.enabled.load(std::memory_order_relaxed)) return;
  ctx_ = ctx;
  d.Link(this);
}

OrphanWatch::~OrphanWatch() {
  if (shard_ >= 0) OrphanDetector::Get().Unlink(this);
}

absl::Status EnableOrphanDetector(OrphanDetectorOptions options) {
  return OrphanDetector::Get().Enable(std::move(options));
}

void DisableOrphanDetector() { OrphanDetector::Get().Disable(); }

bool OrphanDetectorEnabled() {
  return OrphanDetector::Get().enabled.load(std::memory_order_relaxed);
}

namespace debug {

size_t OrphanedWorkCount(std::string_view kind) {
  return OrphanDetector::Get().orphaned[IndexOf(kind)].load();
}

int64_t OrphanReportCount() { return OrphanDetector::Get().reports.load(); }

}  // namespace debug
}  // namespace reqctx
