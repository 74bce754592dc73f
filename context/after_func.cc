#include "context/after_func.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include "context/internal/context_access.h"
#include "context/internal/executor.h"
#include "context/orphans.h"

namespace reqctx {
namespace internal {
namespace {

int64_t MonoNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// While an f runs on this thread: when its context was seen done (ns).
thread_local int64_t t_done_ns = 0;

}  // namespace

void AfterFuncCore::Start(const Context& ctx, std::function<void()> f) {
  node_ = NodeRef<CancelNode>::Share(ContextAccess::CancelLayer(ctx));
  f_ = std::move(f);
  // Registers with the context; schedules f at once if it is already done.
  if (!node_ || node_->AddListener(this)) return;
  JobList now;
  Schedule(now);
  Executor::Get().Submit(std::move(now));
}

bool AfterFuncCore::Stop() {
  int expected = kPending;
  if (!phase_.compare_exchange_strong(expected, kStopped)) return false;
  if (node_) node_->RemoveListener(this);
  f_ = nullptr;  // Never runs: release what it captured now.
  return true;
}

void AfterFuncCore::Wait() {
  if (phase_.load() != kScheduled) return;
  std::unique_lock<std::mutex> lock(mu_);
  if (runner_ == std::this_thread::get_id()) return;
  finished_cv_.wait(lock, [this] { return finished_; });
}

void AfterFuncCore::OnParentDone(DoneReason, const absl::Status&,
                                 JobList& deferred) noexcept {
  Schedule(deferred);
}

void AfterFuncCore::Schedule(JobList& out) noexcept {
  int expected = kPending;
  if (phase_.compare_exchange_strong(expected, kScheduled)) {
    done_ns_ = MonoNowNs();  // Published to Run() by the executor's queue.
    Retain();
    out.Push(this);
  }
}

void AfterFuncCore::Run() noexcept {
  {
    std::lock_guard<std::mutex> lock(mu_);
    runner_ = std::this_thread::get_id();
  }
  const int64_t outer_done_ns = std::exchange(t_done_ns, done_ns_);
  if (OrphanDetectorEnabled()) {
    // Runs because its context is done: orphaned once it runs too long.
    const Context ctx = ContextAccess::FromNode(
        NodeRef<Node>::Share(static_cast<Node*>(node_.get())));
    OrphanWatch watch(ctx, "after_func", "");
    f_();
  } else {
    f_();
  }
  t_done_ns = outer_done_ns;
  f_ = nullptr;
  // Dropped last, after the unlock (may free this object).
  const std::shared_ptr<void> retained = TakeRetained();
  {
    // Notified under the lock: an embedded core may be destroyed by its
    // owner as soon as Wait() sees finished_, so nothing here touches this
    // object after the unlock.
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    finished_cv_.notify_all();
  }
}

// Shared by the handle, the context's listener list (raw, while linked) and
// the executor (while scheduled: `self_` keeps it alive until f returned).
class AfterFuncState final
    : public AfterFuncCore,
      public std::enable_shared_from_this<AfterFuncState> {
 private:
  void Retain() noexcept override {
    self_ = shared_from_this();  // No allocation: a refcount.
  }
  std::shared_ptr<void> TakeRetained() noexcept override {
    return std::move(self_);
  }

  std::shared_ptr<AfterFuncState> self_;  // Set while scheduled.
};

absl::Duration SinceAfterFuncContextDone() {
  if (t_done_ns == 0) return absl::ZeroDuration();
  return absl::Nanoseconds(MonoNowNs() - t_done_ns);
}

}  // namespace internal

AfterFuncHandle::AfterFuncHandle(
    std::shared_ptr<internal::AfterFuncState> state)
    : state_(std::move(state)) {}

AfterFuncHandle::AfterFuncHandle(AfterFuncHandle&& other) noexcept = default;

AfterFuncHandle& AfterFuncHandle::operator=(AfterFuncHandle&& other) noexcept {
  if (this != &other) {
    AfterFuncHandle old(std::move(*this));  // Stops (and waits) like ~.
    state_ = std::move(other.state_);
  }
  return *this;
}

AfterFuncHandle::~AfterFuncHandle() {
  if (!state_) return;
  state_->StopAndWait();
}

bool AfterFuncHandle::Stop() { return state_ && state_->Stop(); }

AfterFuncHandle AfterFunc(const Context& ctx, std::function<void()> f) {
  auto state = std::make_shared<internal::AfterFuncState>();
  state->Start(ctx, std::move(f));
  return AfterFuncHandle(std::move(state));
}

}  // namespace reqctx
