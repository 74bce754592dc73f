#include "context/internal/node.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

#include "context/internal/timer_service.h"

namespace reqctx::internal {

const absl::Status& ErrStatus(DoneReason reason) {
  // Built once: Err() on a done context then costs a refcount, no allocation.
  static const absl::Status* const kCanceled =
      new absl::Status(absl::StatusCode::kCancelled, "context canceled");
  static const absl::Status* const kDeadline = new absl::Status(
      absl::StatusCode::kDeadlineExceeded, "context deadline exceeded");
  static const absl::Status* const kOk = new absl::Status();
  switch (reason) {
    case DoneReason::kCanceled:
      return *kCanceled;
    case DoneReason::kDeadline:
      return *kDeadline;
    case DoneReason::kNotDone:
      break;
  }
  return *kOk;
}

Node::Node(NodeKind kind, const Node* parent, CancelNode* cancel_layer,
           uint32_t initial_refs)
    : refs_(initial_refs),
      kind_(kind),
      parent_(parent),
      cancel_layer_(cancel_layer) {
  if (parent_ != nullptr) parent_->Ref();
}

void Node::Unref() const {
  // Iterative, so that releasing the last handle to a long chain does not
  // recurse once per layer.
  // A holder of the only reference skips the atomic decrement: nobody else
  // can take a new reference concurrently (as absl::Status does). The acquire
  // load pairs with the release half of the other holders' decrements.
  const Node* n = this;
  while (n != nullptr &&
         (n->refs_.load(std::memory_order_acquire) == 1 ||
          n->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)) {
    const Node* parent = n->parent_;
    delete n;
    n = parent;
  }
}

const ValueNodeBase* FindValue(const Node* n, const KeyBase* key) {
  for (; n != nullptr; n = n->parent()) {
    if (n->kind() == NodeKind::kValue) {
      const auto* v = static_cast<const ValueNodeBase*>(n);
      if (v->key() == key) return v;
    }
  }
  return nullptr;
}

// --- CancelNode --------------------------------------------------------------

CancelNode::CancelNode(NodeKind kind, const Node* parent)
    : Node(kind, parent, this, /*initial_refs=*/2) {}

CancelNode* CancelNode::New(const Node* parent) {
  auto* n = new CancelNode(NodeKind::kCancel, parent);
  n->PropagateFromParent();
  return n;
}

void CancelNode::PropagateFromParent() {
  // A parent chain that can never be done keeps no child list at all.
  CancelNode* p = parent() == nullptr ? nullptr : parent()->cancel_layer();
  if (p == nullptr) return;
  // As Go's propagateCancel, check for a done parent before locking it. This
  // node is not visible to any other thread yet (no handle, no listener, no
  // timer), so it is marked done without its own lock too. The parent's cause
  // was written before its reason was released, so it is safe to read here.
  if (DoneReason r = p->reason(); r != DoneReason::kNotDone) {
    if (!p->cause_.ok()) cause_ = p->cause_;
    reason_.store(r, std::memory_order_release);
    return;
  }
  p->AddListener(this);
}

void CancelNode::Cancel(DoneReason reason, const absl::Status& cause,
                        bool remove_from_parent) {
  // Fast path for a redundant cancel, as in the usual `cancel();` followed by
  // dropping the CancelFunc: already done, and no cancel still notifying
  // listeners. The reason is stored and the listeners notified with mu_ held,
  // so seeing mu_ unlocked after seeing the reason means that cancel has left
  // its critical section: the same outcome as the locked check below, minus
  // two atomic read-modify-writes.
  if (reason_.load(std::memory_order_acquire) != DoneReason::kNotDone &&
      mu_.IsUnlocked()) {
    return;
  }
  {
    std::lock_guard<SmallMutex> lock(mu_);
    if (reason_.load(std::memory_order_relaxed) != DoneReason::kNotDone) {
      return;  // First cancel wins; Err() and cause never change.
    }
    if (!cause.ok()) cause_ = cause;  // Else cause() reports the err.
    reason_.store(reason, std::memory_order_release);
    OnDoneLocked();
    // Notify every listener before returning (Go holds the parent's lock while
    // canceling children, too): when Cancel returns, all descendants are done.
    Listener* l = std::exchange(listeners_, nullptr);
    while (l != nullptr) {
      Listener* next = l->next_;
      l->prev_ = l->next_ = nullptr;
      l->linked_ = false;
      l->OnParentDone(reason, cause_);
      l = next;
    }
  }
  if (remove_from_parent) {
    CancelNode* p = parent() == nullptr ? nullptr : parent()->cancel_layer();
    if (p != nullptr) p->RemoveListener(this);
  }
}

void CancelNode::OnParentDone(DoneReason reason, const absl::Status& cause) {
  // The parent already unlinked us; it passes its own cause down.
  Cancel(reason, cause, /*remove_from_parent=*/false);
}

void CancelNode::AddListener(Listener* l) {
  std::lock_guard<SmallMutex> lock(mu_);
  DoneReason r = reason_.load(std::memory_order_relaxed);
  if (r != DoneReason::kNotDone) {
    l->OnParentDone(r, cause_);
    return;
  }
  l->prev_ = nullptr;
  l->next_ = listeners_;
  if (listeners_ != nullptr) listeners_->prev_ = l;
  listeners_ = l;
  l->linked_ = true;
}

void CancelNode::RemoveListener(Listener* l) {
  std::lock_guard<SmallMutex> lock(mu_);
  if (!l->linked_) return;
  if (l->prev_ != nullptr) {
    l->prev_->next_ = l->next_;
  } else {
    listeners_ = l->next_;
  }
  if (l->next_ != nullptr) l->next_->prev_ = l->prev_;
  l->prev_ = l->next_ = nullptr;
  l->linked_ = false;
}

size_t CancelNode::ListenerCountForTesting() {
  std::lock_guard<SmallMutex> lock(mu_);
  size_t n = 0;
  for (Listener* l = listeners_; l != nullptr; l = l->next_) ++n;
  return n;
}

void CancelNode::DropCanceler() {
  // The only canceler skips the atomic decrement (nobody can copy it
  // concurrently), as Node::Unref does for the last reference.
  if (cancelers_.load(std::memory_order_acquire) == 1 ||
      cancelers_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    Cancel(DoneReason::kCanceled, absl::OkStatus(), /*remove_from_parent=*/true);
  }
}

namespace {

// A thread blocked in WaitUntil. Lives on that thread's stack; the canceler
// wakes it through its own condition variable.
class Waiter final : public Listener {
 public:
  void OnParentDone(DoneReason, const absl::Status&) override {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  }
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // Guarded by mu.
};

}  // namespace

bool CancelNode::WaitUntil(std::optional<absl::Time> deadline) {
  if (IsDone()) return true;
  if (deadline.has_value() && *deadline <= absl::Now()) return false;
  Waiter w;
  AddListener(&w);
  {
    std::unique_lock<std::mutex> lock(w.mu);
    while (!w.done) {
      if (!deadline.has_value()) {
        w.cv.wait(lock);
        continue;
      }
      absl::Duration left = *deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      // Waits in bounded slices, so absurd deadlines cannot overflow chrono.
      w.cv.wait_for(lock, absl::ToChronoNanoseconds(
                              std::min(left, absl::Hours(1))));
    }
  }
  // Unlinking takes mu_, which a canceler holds while notifying: once this
  // returns, nobody touches `w` any more.
  RemoveListener(&w);
  return IsDone();
}

// --- TimerNode ---------------------------------------------------------------

TimerNode::TimerNode(const Node* parent, absl::Time deadline,
                     absl::Status cause)
    : CancelNode(NodeKind::kTimer, parent),
      deadline_(deadline),
      deadline_cause_(std::move(cause)) {}

TimerNode* TimerNode::New(const Node* parent, absl::Time deadline,
                          absl::Status cause) {
  auto* n = new TimerNode(parent, deadline, std::move(cause));
  n->PropagateFromParent();
  if (deadline <= absl::Now()) {
    n->Cancel(DoneReason::kDeadline, n->deadline_cause_,
              /*remove_from_parent=*/true);
    return n;
  }
  std::lock_guard<SmallMutex> lock(n->mu_);
  if (!n->IsDone()) TimerService::Get().Add(n);  // Else: parent was done.
  return n;
}

void TimerNode::OnDoneLocked() {
  // Whatever canceled us, the timer goes now: nothing piles up in the queue.
  TimerService::Get().Remove(this);
}

}  // namespace reqctx::internal
