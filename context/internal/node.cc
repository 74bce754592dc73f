#include "context/internal/node.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>

#include "context/internal/timer_service.h"

namespace reqctx::internal {

void ErrStatusTable::Fill() {
  new (storage_[static_cast<uint8_t>(DoneReason::kNotDone)]) absl::Status();
  new (storage_[static_cast<uint8_t>(DoneReason::kCanceled)])
      absl::Status(absl::StatusCode::kCancelled, "context canceled");
  new (storage_[static_cast<uint8_t>(DoneReason::kDeadline)]) absl::Status(
      absl::StatusCode::kDeadlineExceeded, "context deadline exceeded");
}

constinit ErrStatusTable kErrStatuses;

namespace {
// Priority 101 is the first one open to programs: this runs before every
// initializer without a priority in the same linked image, and a shared
// library's run before those of the images that load it. A constructor
// function rather than a dynamic initializer of kErrStatuses, so that ASan's
// initialization-order check (which does not know priorities) sees a
// constant-initialized global.
__attribute__((constructor(101))) void FillErrStatuses() {
  kErrStatuses.Fill();
}
}  // namespace

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
    : Node(kind, parent, this, /*initial_refs=*/2),
      Listener(/*is_cancel_node=*/true) {}

CancelNode* CancelNode::New(const Node* parent) {
  auto* n = new CancelNode(NodeKind::kCancel, parent);
  n->PropagateFromParent();
  return n;
}

void CancelNode::InheritDone(const CancelNode* p) {
  // This node is not visible to any other thread yet (no handle, no
  // listener, no timer), so it is marked done without its own lock. The
  // parent's cause was written before its reason was released.
  if (!p->cause_.ok()) cause_ = p->cause_;
  reason_.store(p->reason(), std::memory_order_release);
}

void CancelNode::PropagateFromParent() {
  // A parent chain that can never be done keeps no child list at all.
  CancelNode* p = parent() == nullptr ? nullptr : parent()->cancel_layer();
  if (p == nullptr) return;
  // As Go's propagateCancel, check for a done parent before locking it.
  if (p->IsDone() || !p->AddListener(this)) InheritDone(p);
}

void CancelNode::Cancel(DoneReason reason, const absl::Status& cause,
                        bool remove_from_parent) noexcept {
  // Fast path for a redundant cancel, as in the usual `cancel();` followed by
  // dropping the CancelFunc: already done, and no cancel still walking below
  // this node. A walk holds mu_ from marking this node done until every
  // descendant is done, so seeing mu_ unlocked after seeing the reason means
  // that walk is over: the same outcome as the locked check below, minus two
  // atomic read-modify-writes.
  if (reason_.load(std::memory_order_acquire) != DoneReason::kNotDone &&
      mu_.IsUnlocked()) {
    return;
  }
  JobList deferred;
  mu_.lock();
  if (reason_.load(std::memory_order_relaxed) != DoneReason::kNotDone) {
    mu_.unlock();
    return;  // First cancel wins; Err() and cause never change.
  }
  if (!cause.ok()) cause_ = cause;  // Else cause() reports the err.
  reason_.store(reason, std::memory_order_release);
  OnDoneLocked();
  CancelDescendantsAndUnlock(deferred);
  if (remove_from_parent) {
    CancelNode* p = parent() == nullptr ? nullptr : parent()->cancel_layer();
    if (p != nullptr) p->RemoveListener(this);
  }
  // AfterFuncs start only now that no node lock is held.
  if (!deferred.empty()) Executor::Get().Submit(std::move(deferred));
}

void CancelNode::CancelDescendantsAndUnlock(JobList& deferred) noexcept {
  // Depth first. `cur` is locked and done; `list` says which of its lists
  // (main, or a shard, whose lock is then held too) is being emptied. Every
  // node on the path from `this` to `cur` is locked, with the list it is
  // working on, so a concurrent cancel of any of them waits until its
  // subtree is done, and no listener on a held list can go away (each
  // unlinks itself under that list's lock). The way back up is the parent's
  // cancel layer (a child is only ever linked under exactly that node), in
  // the list the child was linked to.
  CancelNode* cur = this;
  uint8_t list = Listener::kMainList;
  for (;;) {
    ListenerShards* sh = cur->shards_.load(std::memory_order_acquire);
    ListenerList& from = list == Listener::kMainList
                             ? cur->listeners_
                             : sh->shards[list].list;
    Listener* l = from.Pop();
    if (l == nullptr) {
      // This list is empty: on to the node's next shard, else back up.
      uint32_t next = list == Listener::kMainList ? 0 : list + 1u;
      if (list != Listener::kMainList) sh->shards[list].mu.unlock();
      if (sh != nullptr && next < sh->count) {
        sh->shards[next].mu.lock();
        list = static_cast<uint8_t>(next);
        continue;
      }
      CancelNode* up = cur == this ? nullptr : cur->parent()->cancel_layer();
      const uint8_t up_list = cur->list_;
      cur->mu_.unlock();
      if (up == nullptr) return;
      cur = up;
      list = up_list;
      continue;
    }
    if (!l->is_cancel_node_) {
      l->OnParentDone(cur->reason(), cur->cause_, deferred);
      continue;
    }
    auto* child = static_cast<CancelNode*>(l);
    child->mu_.lock();
    if (child->reason_.load(std::memory_order_relaxed) !=
        DoneReason::kNotDone) {
      // Canceled on its own and about to unlink itself (it waits for our
      // lock to do so); its own walk already ran.
      child->mu_.unlock();
      continue;
    }
    if (!cur->cause_.ok()) child->cause_ = cur->cause_;
    child->reason_.store(cur->reason(), std::memory_order_release);
    child->OnDoneLocked();
    cur = child;
    list = Listener::kMainList;
  }
}

bool CancelNode::AddToMainLocked(Listener* l) {
  if (reason_.load(std::memory_order_relaxed) != DoneReason::kNotDone) {
    return false;
  }
  l->list_ = Listener::kMainList;
  listeners_.Push(l);
  return true;
}

ListenerShards* CancelNode::Shards() {
  std::lock_guard<SmallMutex> lock(mu_);
  ListenerShards* sh = shards_.load(std::memory_order_relaxed);
  if (sh == nullptr) {
    static const uint32_t kCount = static_cast<uint32_t>(
        std::clamp<unsigned>(std::thread::hardware_concurrency(), 1, 64));
    try {
      sh = new ListenerShards(kCount);
    } catch (const std::bad_alloc&) {
      return nullptr;  // Stay on the main list.
    }
    shards_.store(sh, std::memory_order_release);
  }
  return sh;
}

bool CancelNode::AddListener(Listener* l) {
  ListenerShards* sh = shards_.load(std::memory_order_acquire);
  if (sh == nullptr) {
    if (mu_.try_lock()) {  // Uncontended: the main list.
      const bool added = AddToMainLocked(l);
      mu_.unlock();
      return added;
    }
    sh = Shards();  // Contended: go per-CPU from now on.
    if (sh == nullptr) {
      std::lock_guard<SmallMutex> lock(mu_);
      return AddToMainLocked(l);
    }
  }
  const int cpu = sched_getcpu();
  const uint32_t i = cpu < 0 ? 0 : static_cast<uint32_t>(cpu) % sh->count;
  ListenerShard& shard = sh->shards[i];
  std::lock_guard<SmallMutex> lock(shard.mu);
  // A cancel sets the reason before it takes any shard lock; if it has not
  // reached this shard yet it will find `l` here.
  if (reason_.load(std::memory_order_acquire) != DoneReason::kNotDone) {
    return false;
  }
  l->list_ = static_cast<uint8_t>(i);
  shard.list.Push(l);
  return true;
}

void CancelNode::RemoveListener(Listener* l) {
  if (l->list_ == Listener::kMainList) {
    std::lock_guard<SmallMutex> lock(mu_);
    if (l->linked_) listeners_.Unlink(l);
    return;
  }
  ListenerShard& shard =
      shards_.load(std::memory_order_acquire)->shards[l->list_];
  std::lock_guard<SmallMutex> lock(shard.mu);
  if (l->linked_) shard.list.Unlink(l);
}

CancelNode::~CancelNode() { delete shards_.load(std::memory_order_relaxed); }

size_t CancelNode::ListenerCountForTesting() {
  std::lock_guard<SmallMutex> lock(mu_);
  size_t n = listeners_.Count();
  if (ListenerShards* sh = shards_.load(std::memory_order_acquire)) {
    for (uint32_t i = 0; i < sh->count; ++i) {
      std::lock_guard<SmallMutex> shard_lock(sh->shards[i].mu);
      n += sh->shards[i].list.Count();
    }
  }
  return n;
}

// --- ListenerList ------------------------------------------------------------

void ListenerList::Push(Listener* l) {
  l->prev_ = nullptr;
  l->next_ = head_;
  if (head_ != nullptr) head_->prev_ = l;
  head_ = l;
  l->linked_ = true;
}

void ListenerList::Unlink(Listener* l) {
  if (l->prev_ != nullptr) {
    l->prev_->next_ = l->next_;
  } else {
    head_ = l->next_;
  }
  if (l->next_ != nullptr) l->next_->prev_ = l->prev_;
  l->prev_ = l->next_ = nullptr;
  l->linked_ = false;
}

Listener* ListenerList::Pop() {
  Listener* l = head_;
  if (l != nullptr) Unlink(l);
  return l;
}

size_t ListenerList::Count() const {
  size_t n = 0;
  for (Listener* l = head_; l != nullptr; l = l->next_) ++n;
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
  void OnParentDone(DoneReason, const absl::Status&,
                    JobList&) noexcept override {
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  }
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // Guarded by mu.
};

}  // namespace

bool CancelNode::WaitUntil(MonoTime deadline) {
  if (IsDone()) return true;
  if (deadline <= MonoNow()) return false;
  Waiter w;
  if (!AddListener(&w)) return true;
  {
    std::unique_lock<std::mutex> lock(w.mu);
    WaitUntilMono(w.cv, lock, deadline, [&w] { return w.done; });
  }
  // Unlinking takes mu_, which a canceler holds while notifying: once this
  // returns, nobody touches `w` any more.
  RemoveListener(&w);
  return IsDone();
}

// --- TimerNode ---------------------------------------------------------------

TimerNode::TimerNode(const Node* parent, absl::Time deadline,
                     MonoTime mono_deadline, absl::Status cause)
    : CancelNode(NodeKind::kTimer, parent),
      armed_(false),
      deadline_(deadline),
      mono_deadline_(mono_deadline),
      deadline_cause_(std::move(cause)) {}

TimerNode* TimerNode::New(const Node* parent, absl::Time deadline,
                          MonoTime mono_deadline, absl::Status cause) {
  TimerNode* n = NewUnarmed(parent, deadline, mono_deadline, std::move(cause));
  if (!n->Queue()) {
    // Out of memory for the timer heap: undo, and say so.
    n->Cancel(DoneReason::kCanceled, absl::OkStatus(),
              /*remove_from_parent=*/true);
    n->Unref();
    n->Unref();
    throw std::bad_alloc();
  }
  return n;
}

TimerNode* TimerNode::NewUnarmed(const Node* parent, absl::Time deadline,
                                 MonoTime mono_deadline, absl::Status cause) {
  auto* n = new TimerNode(parent, deadline, mono_deadline, std::move(cause));
  n->PropagateFromParent();
  if (mono_deadline <= MonoNow()) {
    n->Cancel(DoneReason::kDeadline, n->deadline_cause_,
              /*remove_from_parent=*/true);
  }
  return n;
}

bool TimerNode::Arm() {
  if (mono_deadline_ <= MonoNow()) {
    Cancel(DoneReason::kDeadline, deadline_cause_, /*remove_from_parent=*/true);
    return true;
  }
  return Queue();
}

bool TimerNode::Queue() {
  if (mono_deadline_ == kMonoNever) return true;  // Beyond the clock: never fires.
  std::lock_guard<SmallMutex> lock(mu_);
  // Done (its deadline passed, or the parent was done): nothing to queue.
  if (armed_ || IsDone()) return true;
  if (!TimerService::Get().Add(this)) return false;
  armed_ = true;
  return true;
}

bool TimerNode::IsArmedForTesting() {
  std::lock_guard<SmallMutex> lock(mu_);
  return armed_;
}

void TimerNode::OnDoneLocked() {
  // Whatever canceled us, the timer goes now: nothing piles up in the queue.
  if (armed_) TimerService::Get().Remove(this);
}

const TimerNode* NearestTimer(const Node* n) {
  // Only timer layers have deadlines, and each is already the earliest of its
  // chain (WithDeadline makes no timer when the parent's is earlier).
  while (n != nullptr) {
    CancelNode* c = n->cancel_layer();
    if (c == nullptr) return nullptr;
    if (c->kind() == NodeKind::kTimer) return static_cast<const TimerNode*>(c);
    n = c->parent();
  }
  return nullptr;
}

}  // namespace reqctx::internal
