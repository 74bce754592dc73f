#include "context/group.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "context/internal/thread_start.h"
#include "context/orphans.h"
#include "ledger/causes.h"

namespace reqctx {

Group::Group(const Context& parent) : Group(WithCancelCause(parent)) {}

Group::Group(std::pair<Context, CancelCauseFunc> ctx_and_cancel)
    : ctx_(std::move(ctx_and_cancel.first)),
      cancel_(std::move(ctx_and_cancel.second)) {}

Group::~Group() { Wait().IgnoreError(); }

void Group::SetLimit(int n) {
  std::lock_guard<std::mutex> lock(mu_);
  limit_ = n;
  slot_freed_.notify_all();
}

void Group::Go(std::function<absl::Status(const Context&)> task) {
  std::unique_lock<std::mutex> lock(mu_);
  slot_freed_.wait(lock, [this] { return limit_ <= 0 || active_ < limit_; });
  ++active_;
  const int number = ++started_;
  try {
    threads_.reserve(threads_.size() + 1);
    threads_.push_back(internal::StartThread(
        [this, number, task = std::move(task)] { RunTask(task, number); }));
  } catch (const std::exception& e) {
    // No thread (or no memory): the slot is given back and the task counts
    // as failed, so Wait() reports it and the limit never leaks a slot.
    --active_;
    lock.unlock();
    slot_freed_.notify_all();
    Fail(absl::ResourceExhaustedError(
             absl::StrCat("reqctx::Group: cannot start a task: ", e.what())),
         number);
  }
}

void Group::Fail(const absl::Status& status, int number) {
  bool first_error = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (first_error_.ok()) {
      first_error_ = status;
      first_error = true;
    }
  }
  if (first_error) {
    cancel_(MarkCause(status, CauseKind::kGroupSibling,
                      absl::StrCat("task #", number)));
  }
}

void Group::RunTask(const std::function<absl::Status(const Context&)>& task,
                    int number) {
  absl::Status status;
  {
    OrphanWatch watch(ctx_, "group_task", "");
    status = task(ctx_);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    --active_;
  }
  slot_freed_.notify_all();
  if (!status.ok()) Fail(status, number);
}

absl::Status Group::Wait() {
  // Tasks may call Go() while we join, so drain until no thread is left.
  for (;;) {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads.swap(threads_);
    }
    if (threads.empty()) break;
    for (std::thread& t : threads) t.join();
  }
  absl::Status err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    err = first_error_;
  }
  cancel_(err);
  return err;
}

}  // namespace reqctx
