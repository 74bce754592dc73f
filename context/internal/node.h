// Internals of reqctx::Context: the tree of immutable nodes behind the handle.
//
// Not part of the public API; include "context/context.h" instead.
//
// Shape (mirrors Go's context.go):
//   Node        one layer: Background/TODO, WithValue, WithoutCancel, ...
//   CancelNode  a cancelable layer (Go's cancelCtx): done state, cause, and an
//               intrusive list of Listeners (child CancelNodes, waiters,
//               AfterFuncs) notified when it is canceled.
//   TimerNode   a CancelNode with a deadline (Go's timerCtx), registered with
//               the shared TimerService. The deadline fires by the monotonic
//               clock (see clock.h).
//
// Lifetime: nodes are intrusively reference counted (NodeRef). A node holds a
// reference to its parent, so a chain lives while any descendant handle does.
// Listeners are linked into their CancelNode by raw pointer; each unlinks
// itself under the node's mutex before it goes away, so a linked pointer is
// always valid while that mutex is held. Releasing a chain is iterative.
//
// Locking (the one lock order): CancelNode::mu_ locks nest parent -> child
// only (a cancel walks down the tree holding the locks along its path, as
// Go's recursive cancel does), then node -> TimerService shard. Nothing else
// is locked under a node lock: AfterFuncs found by a cancel are handed to the
// Executor only after the walk has released every node lock. The done state
// is an atomic read without the lock (the fast path of Err() and IsDone()).
//
// Cancel never throws, never recurses (a chain a million deep cancels in
// constant stack), and returns only when every descendant is done.
#ifndef REQCTX_CONTEXT_INTERNAL_NODE_H_
#define REQCTX_CONTEXT_INTERNAL_NODE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "context/internal/clock.h"
#include "context/internal/executor.h"
#include "context/internal/small_mutex.h"

namespace reqctx::internal {

class CancelNode;
class Listener;

// Listeners linked through themselves; guarded by whichever lock owns it.
class ListenerList {
 public:
  void Push(Listener* l);    // Links l at the head.
  void Unlink(Listener* l);  // l must be linked here.
  Listener* Pop();           // Unlinks and returns the head, or nullptr.
  size_t Count() const;

 private:
  Listener* head_ = nullptr;
};

// Why a context is done. Stored in one atomic byte.
enum class DoneReason : uint8_t { kNotDone = 0, kCanceled = 1, kDeadline = 2 };

// The three statuses Err() reports, indexed by DoneReason: OK, kCancelled
// "context canceled", kDeadlineExceeded "context deadline exceeded" (Go's
// messages). The table is constant-initialized (no dynamic initializer) and
// filled by a constructor function of priority 101, which runs before every
// ordinary static initializer of the program or library linked with reqctx;
// it is never destroyed, so Err() is valid during static initialization and
// destruction too (timer threads fire deadlines through exit). Reading an
// entry is a plain load: no guard variable, no refcount.
class ErrStatusTable {
 public:
  constexpr ErrStatusTable() = default;
  ErrStatusTable(const ErrStatusTable&) = delete;
  ErrStatusTable& operator=(const ErrStatusTable&) = delete;
  ~ErrStatusTable() = default;  // Leaves the statuses alive on purpose.
  // Builds the three statuses; called once, by that constructor function.
  void Fill();
  const absl::Status& operator[](DoneReason reason) const {
    return *std::launder(reinterpret_cast<const absl::Status*>(
        storage_[static_cast<uint8_t>(reason)]));
  }

 private:
  alignas(absl::Status) unsigned char storage_[3][sizeof(absl::Status)] = {};
};
extern constinit ErrStatusTable kErrStatuses;

// The status Err() reports for `reason` (OK for kNotDone). Messages match Go.
inline const absl::Status& ErrStatus(DoneReason reason) {
  return kErrStatuses[reason];
}

enum class NodeKind : uint8_t { kTodo, kValue, kWithoutCancel, kCancel, kTimer };

// Untyped base of Key<T>: its address is the key's identity.
class KeyBase {
 public:
  explicit constexpr KeyBase(std::string_view debug_name)
      : debug_name_(debug_name) {}
  KeyBase(const KeyBase&) = delete;
  KeyBase& operator=(const KeyBase&) = delete;
  constexpr std::string_view debug_name() const { return debug_name_; }

 private:
  std::string_view debug_name_;
};

class Node {
 public:
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  NodeKind kind() const { return kind_; }
  const Node* parent() const { return parent_; }
  // Nearest cancelable layer at or above this node; nullptr when the chain up
  // to Background (or to a WithoutCancel) has none: such a context can never
  // be done.
  CancelNode* cancel_layer() const { return cancel_layer_; }

  void Ref() const { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Drops one reference; frees this node (and, iteratively, any ancestors
  // that it kept alive alone) when it was the last.
  void Unref() const;

 protected:
  // Takes a reference to `parent` (which may be null: Background). The new
  // node holds `initial_refs` references for its creator to adopt (set here,
  // before the node is published, so no atomic read-modify-write is needed).
  Node(NodeKind kind, const Node* parent, CancelNode* cancel_layer,
       uint32_t initial_refs = 1);
  virtual ~Node() = default;

 private:
  mutable std::atomic<uint32_t> refs_;
  const NodeKind kind_;
  const Node* const parent_;  // Owned reference; released in Unref().
  CancelNode* const cancel_layer_;
};

// Owning pointer to a Node subtype. Null means Background.
template <typename T>
class NodeRef {
 public:
  NodeRef() = default;
  // Adopts one reference already taken by the caller.
  static NodeRef Adopt(T* p) { return NodeRef(p); }
  // Takes a new reference.
  static NodeRef Share(T* p) {
    if (p != nullptr) p->Ref();
    return NodeRef(p);
  }
  NodeRef(const NodeRef& o) : p_(o.p_) {
    if (p_ != nullptr) p_->Ref();
  }
  NodeRef(NodeRef&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  NodeRef& operator=(NodeRef o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~NodeRef() {
    if (p_ != nullptr) p_->Unref();
  }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  explicit NodeRef(T* p) : p_(p) {}
  T* p_ = nullptr;
};

// Something a CancelNode notifies when it is canceled.
class Listener {
 public:
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Called once, with the notifying node's mutex held, when that node is
  // canceled. Must not block, must not lock any node and must not throw.
  // Work that might do any of these (running user code, starting a thread)
  // goes into `deferred`, which the canceler submits to the Executor after it
  // has released every node lock.
  virtual void OnParentDone(DoneReason reason, const absl::Status& cause,
                            JobList& deferred) noexcept = 0;

 protected:
  // `is_cancel_node`: this listener is a child CancelNode, which the cancel
  // walk cancels itself (iteratively) instead of calling OnParentDone.
  explicit Listener(bool is_cancel_node = false)
      : is_cancel_node_(is_cancel_node) {}
  ~Listener() = default;

 private:
  friend class CancelNode;
  friend class ListenerList;
  static constexpr uint8_t kMainList = 0xff;
  // Guarded by the lock of the list it is on (the node's mu_ or a shard's).
  Listener* prev_ = nullptr;
  Listener* next_ = nullptr;
  bool linked_ = false;
  const bool is_cancel_node_;
  // Which list of the node it was linked to: kMainList or a shard index.
  // Written once, before the link is published.
  uint8_t list_ = kMainList;
};

// The per-CPU listener lists of a contended CancelNode: a node whose lock
// was once found taken when a listener came to register (the usual case: a
// server-lifetime context that every request derives from) registers later
// listeners in the list of the registering thread's CPU, each under its own
// lock on its own cache line, so threads on different CPUs do not serialise
// on one mutex. Created once (under the node's mu_), freed with the node.
struct alignas(64) ListenerShard {
  SmallMutex mu;
  ListenerList list;  // Guarded by mu.
};
struct ListenerShards {
  explicit ListenerShards(uint32_t n) : count(n), shards(new ListenerShard[n]) {}
  const uint32_t count;
  const std::unique_ptr<ListenerShard[]> shards;
};

class CancelNode : public Node, public Listener {
 public:
  // A new cancelable child of `parent`, already linked to (or, if the parent
  // is done, canceled by) the parent's cancel layer. Holds two references
  // (for the Context and the CancelFunc to adopt) and one canceler.
  static CancelNode* New(const Node* parent);

  DoneReason reason() const { return reason_.load(std::memory_order_acquire); }
  bool IsDone() const { return reason() != DoneReason::kNotDone; }
  // The cause; only meaningful once IsDone() (it is immutable from then on).
  // Without a cause of its own, the err (cause_ stays OK: storing a copy of
  // the shared err status would cost two atomic refcount updates per node).
  const absl::Status& cause() const {
    return cause_.ok() ? ErrStatus(reason()) : cause_;
  }

  // Cancels this node and, before returning, every descendant; then submits
  // the AfterFuncs that fired to the Executor (with no lock held). A no-op if
  // it is already done. An OK `cause` means "no cause" (cause becomes the
  // err). With `remove_from_parent`, also unlinks this node from its parent.
  // Never throws; iterative, whatever the depth of the tree.
  void Cancel(DoneReason reason, const absl::Status& cause,
              bool remove_from_parent) noexcept;

  // Links `l` so that it is notified when this node is canceled and returns
  // true; or, if this node is already done, links nothing and returns false
  // (the caller then acts as if notified, outside any lock). Once the node's
  // lock has been seen contended here, listeners go to per-CPU lists (see
  // ListenerShards).
  [[nodiscard]] bool AddListener(Listener* l);
  // Unlinks `l` if it is still linked. After this returns, no notification of
  // `l` is in progress.
  void RemoveListener(Listener* l);

  // Blocks until done or until the monotonic time `deadline` (kMonoNever: no
  // limit). Returns IsDone(). No thread is created; the caller sleeps on its
  // own condvar.
  bool WaitUntil(MonoTime deadline);

  // CancelFunc bookkeeping: the context is canceled when the last CancelFunc
  // copy is dropped.
  void AddCanceler() { cancelers_.fetch_add(1, std::memory_order_relaxed); }
  void DropCanceler();

  // Number of linked listeners (children, waiters, AfterFuncs). For tests.
  size_t ListenerCountForTesting();
  // Whether registration has gone per-CPU (see AddListener). For tests.
  bool IsShardedForTesting() const {
    return shards_.load(std::memory_order_acquire) != nullptr;
  }
  // Makes registration per-CPU now, as contention would. For tests.
  void ShardForTesting() { Shards(); }

  // Never called: a cancel walk cancels child nodes itself.
  void OnParentDone(DoneReason, const absl::Status&,
                    JobList&) noexcept override {}

 protected:
  CancelNode(NodeKind kind, const Node* parent);
  ~CancelNode() override;
  // Links this node under its parent's cancel layer (Go's propagateCancel).
  void PropagateFromParent();
  // Marks this unpublished node done as its done parent `p` is.
  void InheritDone(const CancelNode* p);
  // Hook for TimerNode: called with mu_ held, right after the node is done.
  virtual void OnDoneLocked() {}

  SmallMutex mu_;

 private:
  // With mu_ held and this node just marked done: cancels every descendant,
  // depth first, holding the locks along the path from this node (as Go's
  // recursive cancel does) but using no stack per level; unlocks mu_.
  void CancelDescendantsAndUnlock(JobList& deferred) noexcept;
  // Links `l` into the main list if not done; mu_ held.
  bool AddToMainLocked(Listener* l);
  // The per-CPU lists, created on first call; nullptr if out of memory.
  ListenerShards* Shards();

  std::atomic<DoneReason> reason_{DoneReason::kNotDone};
  std::atomic<uint32_t> cancelers_{1};  // The creator's CancelFunc.
  absl::Status cause_;  // OK: no cause. Written once under mu_ before reason_.
  ListenerList listeners_;  // The main list. Guarded by mu_.
  std::atomic<ListenerShards*> shards_{nullptr};  // Owned; set once, mu_ held.
};

class TimerNode final : public CancelNode {
 public:
  // A child of `parent` that is canceled with kDeadline (cause `cause`, OK
  // for none) when the monotonic clock reaches `mono_deadline`; done at once
  // if it has. `deadline` is the same instant on the wall clock, for
  // Deadline(). Holds two references and one canceler, as CancelNode::New.
  // Throws std::bad_alloc (leaving nothing behind) if the timer cannot be
  // queued.
  static TimerNode* New(const Node* parent, absl::Time deadline,
                        MonoTime mono_deadline, absl::Status cause);
  // Like New, but the timer is not armed: Deadline() reports `deadline`
  // and children compare against `mono_deadline`, yet nothing queues or
  // fires it until Arm(). Done at once if `mono_deadline` has passed.
  // Never throws for the timer. New is this plus Queue().
  static TimerNode* NewUnarmed(const Node* parent, absl::Time deadline,
                               MonoTime mono_deadline,
                               absl::Status cause = absl::OkStatus());

  absl::Time deadline() const { return deadline_; }
  MonoTime mono_deadline() const { return mono_deadline_; }
  const absl::Status& deadline_cause() const { return deadline_cause_; }
  // Arms the timer of a node made by NewUnarmed: it is then canceled with
  // kDeadline at its deadline, at once if that has passed. A no-op if it is
  // armed or done. Returns false only if memory for the timer cannot be had
  // (the node is then left unarmed). Never throws.
  bool Arm();
  // Whether the timer is armed (queued or fired; a deadline beyond the
  // monotonic clock's range never is). For tests.
  bool IsArmedForTesting();

  // Owned by TimerService: the shard holding this node (set by Add, under
  // the node's mutex) and the index in that shard's heap (guarded by the
  // shard's mutex).
  static constexpr uint32_t kNotQueued = ~uint32_t{0};
  uint32_t heap_index = kNotQueued;
  uint16_t shard = 0;  // TimerService has at most 64 shards.

 private:
  // False for NewUnarmed until Arm(): never queued, so its end takes no
  // shard lock. (Next to `shard`, in what was padding: no byte more per
  // node.) Guarded by mu_.
  bool armed_;

  TimerNode(const Node* parent, absl::Time deadline, MonoTime mono_deadline,
            absl::Status cause);
  // Queues the timer unless it is done, armed already, or its deadline is
  // beyond the clock (kMonoNever: it never fires). Returns false only if
  // memory for the timer cannot be had (the node is then left unarmed).
  bool Queue();
  void OnDoneLocked() override;

  const absl::Time deadline_;
  const MonoTime mono_deadline_;
  const absl::Status deadline_cause_;
};

// A WithValue layer. The key's address identifies the value's type, so a
// lookup through Key<T> may downcast to ValueNode<T>.
class ValueNodeBase : public Node {
 public:
  const KeyBase* key() const { return key_; }

 protected:
  ValueNodeBase(const Node* parent, const KeyBase* key)
      : Node(NodeKind::kValue, parent,
             parent == nullptr ? nullptr : parent->cancel_layer()),
        key_(key) {}

 private:
  const KeyBase* const key_;
};

template <typename T>
class ValueNode final : public ValueNodeBase {
 public:
  ValueNode(const Node* parent, const KeyBase* key, T value)
      : ValueNodeBase(parent, key), value_(std::move(value)) {}
  const T& value() const { return value_; }

 private:
  const T value_;
};

// The timer layer that bounds `n`'s deadline (the nearest one: each is the
// earliest of its chain), or nullptr if `n` has no deadline.
const TimerNode* NearestTimer(const Node* n);

// The nearest ancestor (or `n` itself) that is a value layer for `key`.
const ValueNodeBase* FindValue(const Node* n, const KeyBase* key);

}  // namespace reqctx::internal

#endif  // REQCTX_CONTEXT_INTERNAL_NODE_H_
