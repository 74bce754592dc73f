#include "context/core.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/internal/clock.h"
#include "context/internal/context_access.h"
#include "context/internal/owned_deadline.h"

namespace reqctx {
namespace {

using internal::CancelNode;
using internal::DoneReason;
using internal::Node;
using internal::NodeKind;
using internal::NodeRef;

class TodoNode final : public Node {
 public:
  TodoNode() : Node(NodeKind::kTodo, nullptr, nullptr) {}
};

// Keeps the parent's values but cuts the cancel chain: no cancel layer.
class WithoutCancelNode final : public Node {
 public:
  explicit WithoutCancelNode(const Node* parent)
      : Node(NodeKind::kWithoutCancel, parent, nullptr) {}
};

absl::string_view ToAbsl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

}  // namespace

// --- DoneSignal ----------------------------------------------------------------

namespace {

// Sleeps until the monotonic time `until` (never-done contexts).
void SleepUntilMono(internal::MonoTime until) {
  for (;;) {
    const absl::Duration left = internal::MonoUntil(internal::MonoNow(), until);
    if (left <= absl::ZeroDuration()) return;
    absl::SleepFor(std::min(left, absl::Hours(24)));
  }
}

bool WaitMono(CancelNode* node, internal::MonoTime until) {
  if (!node) {
    SleepUntilMono(until);
    return false;
  }
  return node->WaitUntil(until);
}

bool WaitForImpl(CancelNode* node, absl::Duration timeout) {
  if (timeout <= absl::ZeroDuration()) return node != nullptr && node->IsDone();
  return WaitMono(node, internal::MonoAdd(internal::MonoNow(), timeout));
}

bool WaitUntilImpl(CancelNode* node, absl::Time deadline) {
  // Converted to the monotonic clock once, here: a clock step during the
  // wait does not move its end.
  return WaitMono(node, internal::MonoFromWall(deadline));
}

}  // namespace

void DoneSignal::Wait() const { WaitMono(node_.get(), internal::kMonoNever); }
bool DoneSignal::WaitFor(absl::Duration timeout) const {
  return WaitForImpl(node_.get(), timeout);
}
bool DoneSignal::WaitUntil(absl::Time deadline) const {
  return WaitUntilImpl(node_.get(), deadline);
}

void DoneRef::Wait() const&& { WaitMono(node_, internal::kMonoNever); }
bool DoneRef::WaitFor(absl::Duration timeout) const&& {
  return WaitForImpl(node_, timeout);
}
bool DoneRef::WaitUntil(absl::Time deadline) const&& {
  return WaitUntilImpl(node_, deadline);
}
DoneRef::operator DoneSignal() const&& {
  return DoneSignal(NodeRef<CancelNode>::Share(node_));
}

// --- Context -------------------------------------------------------------------

std::optional<absl::Time> Context::Deadline() const {
  const internal::TimerNode* t = internal::NearestTimer(node_.get());
  if (t == nullptr) return std::nullopt;
  return t->deadline();
}

std::optional<absl::Duration> Context::TimeLeft() const {
  const internal::TimerNode* t = internal::NearestTimer(node_.get());
  if (t == nullptr) return std::nullopt;
  return internal::MonoUntil(internal::MonoNow(), t->mono_deadline());
}

std::string Context::DebugString() const {
  std::vector<const Node*> chain;
  for (const Node* n = node_.get(); n != nullptr; n = n->parent()) {
    chain.push_back(n);
  }
  std::string out = "context.Background";
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Node* n = *it;
    switch (n->kind()) {
      case NodeKind::kTodo:
        out = "context.TODO";
        break;
      case NodeKind::kValue:
        // Never the value itself: values may be credentials.
        absl::StrAppend(
            &out, ".WithValue(",
            ToAbsl(static_cast<const internal::ValueNodeBase*>(n)
                       ->key()
                       ->debug_name()),
            ")");
        break;
      case NodeKind::kWithoutCancel:
        absl::StrAppend(&out, ".WithoutCancel");
        break;
      case NodeKind::kCancel:
        absl::StrAppend(&out, ".WithCancel");
        break;
      case NodeKind::kTimer: {
        absl::Time d = static_cast<const internal::TimerNode*>(n)->deadline();
        absl::StrAppend(&out, ".WithDeadline(",
                        absl::FormatTime(d, absl::UTCTimeZone()), " [",
                        absl::FormatDuration(internal::MonoUntil(
                            internal::MonoNow(),
                            static_cast<const internal::TimerNode*>(n)
                                ->mono_deadline())),
                        "])");
        break;
      }
    }
  }
  return out;
}

// --- CancelFunc ----------------------------------------------------------------

CancelFunc::CancelFunc(const CancelFunc& other) : node_(other.node_) {
  if (node_) node_->AddCanceler();
}

CancelFunc& CancelFunc::operator=(const CancelFunc& other) {
  if (this != &other) *this = CancelFunc(other);
  return *this;
}

CancelFunc& CancelFunc::operator=(CancelFunc&& other) noexcept {
  if (this != &other) {
    if (node_) node_->DropCanceler();
    node_ = std::move(other.node_);
  }
  return *this;
}

CancelFunc::~CancelFunc() {
  if (node_) node_->DropCanceler();
}

void CancelFunc::operator()() const {
  if (node_) {
    node_->Cancel(DoneReason::kCanceled, absl::OkStatus(),
                  /*remove_from_parent=*/true);
  }
}

void CancelCauseFunc::operator()(absl::Status cause) const {
  if (owner_.node_) {
    owner_.node_->Cancel(DoneReason::kCanceled, cause,
                         /*remove_from_parent=*/true);
  }
}

// --- Constructors --------------------------------------------------------------

Context Background() { return Context(); }

Context TODO() {
  static const Node* const todo = new TodoNode();  // Immortal.
  todo->Ref();
  return Context(NodeRef<Node>::Adopt(const_cast<Node*>(todo)));
}

namespace {

// The (Context, CancelFunc) pair for a new node, which already holds their
// two references and one canceler (set at construction: no atomic updates).
std::pair<NodeRef<Node>, NodeRef<CancelNode>> ShareNewNode(CancelNode* n) {
  return {NodeRef<Node>::Adopt(n), NodeRef<CancelNode>::Adopt(n)};
}

}  // namespace

std::pair<Context, CancelFunc> WithCancel(const Context& parent) {
  auto [ctx, canceler] = ShareNewNode(CancelNode::New(parent.node_.get()));
  return {Context(std::move(ctx)), CancelFunc(std::move(canceler))};
}

std::pair<Context, CancelCauseFunc> WithCancelCause(const Context& parent) {
  auto [ctx, cancel] = WithCancel(parent);
  return {std::move(ctx), CancelCauseFunc(std::move(cancel))};
}

namespace {

// The timer child of `parent` for a deadline at `wall` on the wall clock and
// `mono` on the monotonic one, or a plain cancelable child when the parent's
// deadline comes first (compared on the monotonic clock, as Go compares
// times that carry monotonic readings) or there is none of our own.
// `armed` false: the timer layer is never queued (internal/owned_deadline.h).
std::pair<Context, CancelFunc> NewDeadlineChild(const Context& parent,
                                                absl::Time wall,
                                                internal::MonoTime mono,
                                                absl::Status cause,
                                                bool armed = true) {
  const internal::TimerNode* current =
      internal::NearestTimer(ContextAccess::NodeOf(parent));
  // A deadline too far away for the monotonic clock (past ~292 years) still
  // gets a timer layer, so Deadline() reports it; it is never queued.
  if (current != nullptr && current->mono_deadline() <= mono) {
    return WithCancel(parent);
  }
  internal::TimerNode* n =
      armed ? internal::TimerNode::New(ContextAccess::NodeOf(parent), wall,
                                       mono, std::move(cause))
            : internal::TimerNode::NewUnarmed(ContextAccess::NodeOf(parent),
                                              wall, mono, std::move(cause));
  auto [ctx, canceler] = ShareNewNode(n);
  return {ContextAccess::FromNode(std::move(ctx)),
          ContextAccess::MakeCancelFunc(std::move(canceler))};
}

}  // namespace

std::pair<Context, CancelFunc> WithDeadline(const Context& parent,
                                            absl::Time d) {
  return WithDeadlineCause(parent, d, absl::OkStatus());
}

std::pair<Context, CancelFunc> WithTimeout(const Context& parent,
                                           absl::Duration t) {
  return WithTimeoutCause(parent, t, absl::OkStatus());
}

std::pair<Context, CancelFunc> WithDeadlineCause(const Context& parent,
                                                 absl::Time d,
                                                 absl::Status cause) {
  if (d == absl::InfiniteFuture()) return WithCancel(parent);
  return NewDeadlineChild(parent, d, internal::MonoFromWall(d),
                          std::move(cause));
}

std::pair<Context, CancelFunc> WithTimeoutCause(const Context& parent,
                                                absl::Duration t,
                                                absl::Status cause) {
  // Measured on the monotonic clock from now, as Go's WithTimeout.
  if (t == absl::InfiniteDuration()) return WithCancel(parent);
  return NewDeadlineChild(parent, internal::WallNow() + t,
                          internal::MonoAdd(internal::MonoNow(), t),
                          std::move(cause));
}

Context WithoutCancel(const Context& parent) {
  return Context(
      NodeRef<Node>::Adopt(new WithoutCancelNode(parent.node_.get())));
}

absl::Status Cause(const Context& ctx) {
  CancelNode* c = ctx.node_ ? ctx.node_->cancel_layer() : nullptr;
  if (c == nullptr || !c->IsDone()) return absl::OkStatus();
  return c->cause();
}

namespace internal {

std::pair<Context, CancelFunc> WithOwnedTimeout(const Context& parent,
                                                absl::Duration timeout,
                                                absl::Status cause) {
  if (timeout == absl::InfiniteDuration()) return WithCancel(parent);
  return NewDeadlineChild(parent, WallNow() + timeout,
                          MonoAdd(MonoNow(), timeout), std::move(cause),
                          /*armed=*/false);
}

void CancelWithCause(const CancelFunc& cancel, const absl::Status& cause) {
  if (CancelNode* n = ContextAccess::CancelNodeOf(cancel)) {
    n->Cancel(DoneReason::kCanceled, cause, /*remove_from_parent=*/true);
  }
}

void ArmOwnedDeadline(const CancelFunc& cancel) {
  CancelNode* n = ContextAccess::CancelNodeOf(cancel);
  if (n == nullptr) return;
  if (n->kind() == NodeKind::kTimer) {
    auto* timer = static_cast<TimerNode*>(n);
    if (timer->Arm()) return;
    n->Cancel(DoneReason::kDeadline, timer->deadline_cause(),
              /*remove_from_parent=*/true);
    return;
  }
  n->Cancel(DoneReason::kDeadline, absl::OkStatus(),
            /*remove_from_parent=*/true);
}

const absl::Status& DeadlineCause(const Context& ctx) {
  static const absl::Status* const ok = new absl::Status();
  const TimerNode* t = NearestTimer(ContextAccess::NodeOf(ctx));
  return t != nullptr ? t->deadline_cause() : *ok;
}

const void* ContextRoot(const Context& ctx) {
  const Node* n = ContextAccess::NodeOf(ctx);
  if (n == nullptr) return nullptr;
  while (n->parent() != nullptr) n = n->parent();
  return n;
}

bool HasArmedDeadlineForTesting(const Context& ctx) {
  const TimerNode* t = NearestTimer(ContextAccess::NodeOf(ctx));
  return t != nullptr && const_cast<TimerNode*>(t)->IsArmedForTesting();
}

}  // namespace internal

}  // namespace reqctx
