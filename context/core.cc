#include "context/core.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

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

void DoneSignal::Wait() const {
  if (!node_) {
    for (;;) absl::SleepFor(absl::Hours(24));  // Never done: block forever.
  }
  node_->WaitUntil(std::nullopt);
}

bool DoneSignal::WaitFor(absl::Duration timeout) const {
  if (timeout <= absl::ZeroDuration()) return IsDone();
  return WaitUntil(absl::Now() + timeout);
}

bool DoneSignal::WaitUntil(absl::Time deadline) const {
  if (!node_) {
    absl::Duration left = deadline - absl::Now();
    if (left > absl::ZeroDuration()) absl::SleepFor(left);
    return false;
  }
  if (deadline == absl::InfiniteFuture()) return node_->WaitUntil(std::nullopt);
  return node_->WaitUntil(deadline);
}

// --- Context -------------------------------------------------------------------

std::optional<absl::Time> Context::Deadline() const {
  // Only timer layers have deadlines, and each is already the earliest of its
  // chain (WithDeadline makes no timer when the parent's is earlier), so the
  // nearest one answers.
  for (const Node* n = node_.get(); n != nullptr;) {
    CancelNode* c = n->cancel_layer();
    if (c == nullptr) return std::nullopt;
    if (c->kind() == NodeKind::kTimer) {
      return static_cast<const internal::TimerNode*>(c)->deadline();
    }
    n = c->parent();
  }
  return std::nullopt;
}

DoneSignal Context::Done() const {
  CancelNode* c = node_ ? node_->cancel_layer() : nullptr;
  return DoneSignal(NodeRef<CancelNode>::Share(c));
}

absl::Status Context::Err() const {
  CancelNode* c = node_ ? node_->cancel_layer() : nullptr;
  if (c == nullptr) return absl::OkStatus();
  return internal::ErrStatus(c->reason());
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
                        absl::FormatDuration(d - absl::Now()), "])");
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

std::pair<Context, CancelFunc> WithDeadline(const Context& parent,
                                            absl::Time d) {
  return WithDeadlineCause(parent, d, absl::OkStatus());
}

std::pair<Context, CancelFunc> WithTimeout(const Context& parent,
                                           absl::Duration t) {
  return WithDeadlineCause(parent, absl::Now() + t, absl::OkStatus());
}

std::pair<Context, CancelFunc> WithDeadlineCause(const Context& parent,
                                                 absl::Time d,
                                                 absl::Status cause) {
  std::optional<absl::Time> current = parent.Deadline();
  if (d == absl::InfiniteFuture() || (current.has_value() && *current < d)) {
    // The parent's deadline comes first (or there is none of our own): as in
    // Go, this is a plain cancelable child.
    return WithCancel(parent);
  }
  auto [ctx, canceler] = ShareNewNode(
      internal::TimerNode::New(parent.node_.get(), d, std::move(cause)));
  return {Context(std::move(ctx)), CancelFunc(std::move(canceler))};
}

std::pair<Context, CancelFunc> WithTimeoutCause(const Context& parent,
                                                absl::Duration t,
                                                absl::Status cause) {
  return WithDeadlineCause(parent, absl::Now() + t, std::move(cause));
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

}  // namespace reqctx
