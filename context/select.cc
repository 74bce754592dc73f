#include "context/select.h"

#include <atomic>
#include <chrono>
#include <memory>

#include "context/internal/clock.h"
#include "context/internal/context_access.h"
#include "context/internal/executor.h"

namespace reqctx {
namespace {

using internal::CancelNode;
using internal::DoneReason;
using internal::Listener;
using internal::Job;
using internal::JobList;

// What the arms of one Select share: the waiting thread's own mutex and
// condvar (a leaf lock: taking it under a node's lock cannot deadlock).
struct SelectWaiter {
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;  // Guarded by mu.
};

class SelectArm final : public Listener {
 public:
  SelectArm() = default;
  void OnParentDone(DoneReason, const absl::Status&,
                    JobList&) noexcept override {
    std::lock_guard<std::mutex> lock(waiter->mu);
    waiter->woken = true;
    waiter->cv.notify_all();
  }
  SelectWaiter* waiter = nullptr;
  CancelNode* node = nullptr;
  bool linked = false;
};

std::optional<size_t> FirstDone(std::span<CancelNode* const> nodes) {
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i] != nullptr && nodes[i]->IsDone()) return i;
  }
  return std::nullopt;
}

// Sleeps on `w` until woken or the monotonic `end`.
void SleepUntil(SelectWaiter& w, internal::MonoTime end) {
  std::unique_lock<std::mutex> lock(w.mu);
  internal::WaitUntilMono(w.cv, lock, end, [&w] { return w.woken; });
}

// Wakes a Wait() through the caller's mutex and condvar. Queued (as a Job)
// by the cancel walk, so it runs after every node lock is released.
class CvWaker final : public Listener, public Job {
 public:
  CvWaker(std::condition_variable& cv, std::mutex& mu) : cv_(cv), mu_(mu) {}

  void OnParentDone(DoneReason, const absl::Status&,
                    JobList& deferred) noexcept override {
    fired_.store(true, std::memory_order_relaxed);  // Read after unlinking.
    deferred.Push(this);
  }
  void Run() noexcept override {
    std::lock_guard<std::mutex> lock(mu_);
    ran_ = true;
    // Notified under the mutex: once it is released the waiter may return
    // and destroy cv_, so nothing here touches anything after that.
    cv_.notify_all();
  }
  bool fired() const { return fired_.load(std::memory_order_relaxed); }
  bool ran() const { return ran_; }  // Under mu_.

 private:
  std::condition_variable& cv_;
  std::mutex& mu_;
  std::atomic<bool> fired_{false};
  bool ran_ = false;  // Guarded by mu_.
};

// Select over the cancel layers (nullptr: never done) of what was given.
std::optional<size_t> SelectNodes(std::span<CancelNode* const> nodes,
                                  absl::Duration timeout) {
  if (std::optional<size_t> i = FirstDone(nodes)) return i;
  if (timeout <= absl::ZeroDuration()) return std::nullopt;
  const internal::MonoTime end =
      internal::MonoAdd(internal::MonoNow(), timeout);
  SelectWaiter waiter;
  std::unique_ptr<SelectArm[]> arms(new SelectArm[nodes.size()]);
  bool done_at_link = false;
  for (size_t i = 0; i < nodes.size() && !done_at_link; ++i) {
    SelectArm& a = arms[i];
    a.waiter = &waiter;
    a.node = nodes[i];
    if (a.node == nullptr) continue;
    a.linked = a.node->AddListener(&a);
    done_at_link = !a.linked;
  }
  if (!done_at_link) SleepUntil(waiter, end);
  // Unlinking takes each node's lock, which a canceler holds while
  // notifying: after this no arm is touched any more.
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (arms[i].linked) arms[i].node->RemoveListener(&arms[i]);
  }
  return FirstDone(nodes);
}

template <typename T, typename LayerOf>
std::optional<size_t> SelectOver(std::span<const T> items,
                                 absl::Duration timeout, LayerOf layer_of) {
  std::unique_ptr<CancelNode*[]> nodes(new CancelNode*[items.size()]);
  for (size_t i = 0; i < items.size(); ++i) nodes[i] = layer_of(items[i]);
  return SelectNodes(std::span<CancelNode* const>(nodes.get(), items.size()),
                     timeout);
}

}  // namespace

std::optional<size_t> Select(std::span<const Context> ctxs,
                             absl::Duration timeout) {
  return SelectOver(ctxs, timeout, [](const Context& c) {
    return ContextAccess::CancelLayer(c);
  });
}

std::optional<size_t> Select(std::span<const DoneSignal> signals,
                             absl::Duration timeout) {
  return SelectOver(signals, timeout, [](const DoneSignal& d) {
    return ContextAccess::CancelLayer(d);
  });
}

std::optional<size_t> Select(std::initializer_list<DoneSignal> signals,
                             absl::Duration timeout) {
  return Select(std::span<const DoneSignal>(signals.begin(), signals.size()),
                timeout);
}

std::optional<size_t> Select(std::initializer_list<Context> ctxs,
                             absl::Duration timeout) {
  return Select(std::span<const Context>(ctxs.begin(), ctxs.size()), timeout);
}

namespace internal {

bool WaitImpl(const Context& ctx, std::condition_variable& cv,
              std::unique_lock<std::mutex>& lock,
              absl::FunctionRef<bool()> pred) {
  if (pred()) return true;
  CancelNode* node = ContextAccess::CancelLayer(ctx);
  if (node == nullptr) {
    while (!pred()) cv.wait(lock);
    return true;
  }
  if (node->IsDone()) return false;
  CvWaker waker(cv, *lock.mutex());
  // Lock order: the caller's mutex, then the node's (never the reverse: the
  // cancel walk only queues the waker).
  if (!node->AddListener(&waker)) return pred();
  bool satisfied = false;
  for (;;) {
    if ((satisfied = pred())) break;
    if (waker.ran()) break;
    cv.wait(lock);
  }
  node->RemoveListener(&waker);
  // Fired means queued: it will run (the executor never loses a task) and
  // touches the waker, the mutex and cv, so it must be done before return.
  // It takes the mutex, so the wait releases it.
  if (waker.fired()) {
    while (!waker.ran()) cv.wait(lock);
  }
  return satisfied;
}

}  // namespace internal
}  // namespace reqctx
