// StreamResumer (see stream.h).
#include "async/stream.h"

#include <utility>

namespace reqctx {
namespace internal {

void StreamResumer::SetLoop(const LoopRef& loop) {
  std::lock_guard<std::mutex> lock(mu_);
  loop_ = loop;
}

bool StreamResumer::Arm(StreamOp op, const LoopRef& loop,
                        std::coroutine_handle<> h) {
  std::lock_guard<std::mutex> lock(mu_);
  if (done_) {
    result_[static_cast<int>(op)] = false;
    return false;
  }
  pending_[static_cast<int>(op)] = std::make_shared<Wakeup>(loop, h);
  return true;
}

void StreamResumer::Complete(StreamOp op, bool ok) {
  std::shared_ptr<Wakeup> w;
  {
    std::lock_guard<std::mutex> lock(mu_);
    result_[static_cast<int>(op)] = ok;
    w = pending_[static_cast<int>(op)];  // Kept: Abandon may need it.
  }
  if (w) w->Fire();
}

bool StreamResumer::Result(StreamOp op) {
  std::lock_guard<std::mutex> lock(mu_);
  return result_[static_cast<int>(op)];
}

void StreamResumer::CallDone(grpc::Status status, std::shared_ptr<void> self) {
  std::shared_ptr<Wakeup> finish;
  LoopRef loop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = std::move(status);
    done_ = true;
    finish = pending_[static_cast<int>(StreamOp::kFinish)];
    loop = loop_;
    cv_.notify_all();
  }
  // `self` may be the last reference to *this: from here on only locals.
  if (finish) {
    finish->Fire(std::move(self));
  } else if (loop) {
    loop->Post([keep = std::move(self)] {});
  }
}

void StreamResumer::Abandon() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& w : pending_) {
    if (w) w->Abandon();
  }
}

void StreamResumer::WaitDone() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return done_; });
}

bool StreamResumer::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

grpc::Status StreamResumer::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

}  // namespace internal
}  // namespace reqctx
