#include "context/stop_token.h"

#include <memory>
#include <optional>

#include "context/internal/context_access.h"
#include "context/internal/executor.h"

namespace reqctx {
namespace {

using internal::CancelNode;
using internal::DoneReason;
using internal::Executor;
using internal::Listener;
using internal::NodeRef;
using internal::Job;
using internal::JobList;

// Owns itself: linked to the context until it is done, then queued, then
// requests the stop and deletes itself on an executor thread.
class StopRequester final : public Listener, public Job {
 public:
  explicit StopRequester(std::stop_source source)
      : source_(std::move(source)) {}
  void OnParentDone(DoneReason, const absl::Status&,
                    JobList& deferred) noexcept override {
    deferred.Push(this);
  }
  void Run() noexcept override {
    source_.request_stop();
    delete this;
  }

 private:
  std::stop_source source_;
};

// Owns itself once linked: holds the stop_callback that cancels `node_`, and
// destroys it (deregistering from the token) when `node_` is done.
class StopWatch final : public Listener, public Job {
 public:
  StopWatch(NodeRef<CancelNode> node, std::stop_token token)
      : node_(std::move(node)), callback_(std::in_place, std::move(token),
                                          Canceler{node_.get()}) {}
  void OnParentDone(DoneReason, const absl::Status&,
                    JobList& deferred) noexcept override {
    deferred.Push(this);
  }
  // Destroying a stop_callback waits for its callback if that runs on
  // another thread; here that is a Cancel of `node_`, which never blocks on
  // this task, so the wait is short and cannot deadlock. Run on the thread
  // that runs the callback itself, it does not wait.
  void Run() noexcept override { delete this; }
  CancelNode* node() const { return node_.get(); }

 private:
  struct Canceler {
    CancelNode* node;
    void operator()() const noexcept {
      node->Cancel(DoneReason::kCanceled,
                   absl::CancelledError("stop requested"),
                   /*remove_from_parent=*/true);
    }
  };
  NodeRef<CancelNode> node_;
  std::optional<std::stop_callback<Canceler>> callback_;
};

}  // namespace

std::stop_token StopTokenOf(const Context& ctx) {
  CancelNode* node = ContextAccess::CancelLayer(ctx);
  if (node == nullptr) return std::stop_token();
  std::stop_source source;
  std::stop_token token = source.get_token();
  if (node->IsDone()) {
    source.request_stop();
    return token;
  }
  auto* r = new StopRequester(std::move(source));
  if (!node->AddListener(r)) {
    // Done meanwhile: request on this thread (no lock is held here).
    r->Run();
  }
  return token;
}

std::pair<Context, CancelFunc> WithStopToken(const Context& parent,
                                             std::stop_token token) {
  auto [ctx, cancel] = WithCancel(parent);
  if (!token.stop_possible()) return {std::move(ctx), std::move(cancel)};
  CancelNode* node = ContextAccess::CancelLayer(ctx);
  // The callback runs here at once if the stop was already requested; the
  // node is then done and AddListener below declines.
  auto* watch = new StopWatch(NodeRef<CancelNode>::Share(node),
                              std::move(token));
  if (!node->AddListener(watch)) delete watch;
  return {std::move(ctx), std::move(cancel)};
}

}  // namespace reqctx
