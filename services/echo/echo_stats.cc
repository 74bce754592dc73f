#include "services/echo/echo_stats.h"

#include <chrono>

namespace reqctx::echo {

template <typename F>
void EchoStats::Update(F f) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    f(counts_);
  }
  changed_.notify_all();
}

void EchoStats::RequestStarted() {
  Update([](Snapshot& s) {
    ++s.active_requests;
    ++s.started_total;
  });
}

void EchoStats::RequestFinished(const Context& ctx, const absl::Status& result) {
  const absl::Status& err = ctx.Err();
  RequestEnded(err.ok() ? result : err);
}

void EchoStats::RequestEnded(const absl::Status& status) {
  const absl::StatusCode why = status.code();
  Update([why](Snapshot& s) {
    --s.active_requests;
    if (why == absl::StatusCode::kDeadlineExceeded) {
      ++s.deadline_exceeded_total;
    } else if (why == absl::StatusCode::kCancelled) {
      ++s.canceled_total;
    } else {
      ++s.completed_total;
    }
  });
}

void EchoStats::WorkerStarted() {
  Update([](Snapshot& s) { ++s.active_workers; });
}

void EchoStats::WorkerFinished() {
  Update([](Snapshot& s) { --s.active_workers; });
}

EchoStats::Snapshot EchoStats::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

bool EchoStats::WaitUntil(const std::function<bool(const Snapshot&)>& done,
                          absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return changed_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                           [&] { return done(counts_); });
}

}  // namespace reqctx::echo
