#include "context/internal/executor.h"

#include <pthread.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <system_error>
#include <thread>

#include "context/internal/clock.h"
#include "context/internal/thread_start.h"

namespace reqctx::internal {

Executor& Executor::Get() {
  static Executor* const executor = new Executor();
  return *executor;
}

size_t Executor::SoftCap() {
  return std::max<size_t>(4, 2 * std::thread::hardware_concurrency());
}

size_t Executor::HardCap() {
  return std::max<size_t>(64, 8 * std::thread::hardware_concurrency());
}

Executor::Executor() : soft_cap_(SoftCap()), hard_cap_(HardCap()) {
  pthread_atfork([] { Get().ForkPrepare(); }, [] { Get().ForkParent(); },
                 [] { Get().ForkChild(); });
  std::atexit([] { Get().StopAtExit(); });
}

bool Executor::TryStartThread(void (Executor::*fn)()) {
  // Called with mu_ held: the new thread blocks on mu_ until we return.
  try {
    StartThread([this, fn] { (this->*fn)(); }).detach();
    return true;
  } catch (...) {  // std::system_error (EAGAIN) or std::bad_alloc.
    return false;
  }
}

void Executor::Submit(JobList tasks) noexcept {
  if (tasks.empty()) return;
  std::unique_lock<std::mutex> lock(mu_);
  if (stopping_) {
    lock.unlock();
    tasks.RunAll();  // Exit began: no pool any more.
    return;
  }
  size_t n = 0;
  for (JobList copy = std::move(tasks); Job* t = copy.Pop(); ++n) {
    queue_.Push(t);
  }
  if (queued_ == 0) last_progress_ns_ = MonoNow();
  queued_ += n;
  if (idle_ > 0) {
    if (n == 1) {
      work_.notify_one();
    } else {
      work_.notify_all();
    }
  }
  if (queued_ <= idle_ + starting_) return;
  if (supervisor_running_) {
    supervise_.notify_one();
    return;
  }
  if (TryStartThread(&Executor::SupervisorLoop)) {
    supervisor_running_ = true;
    return;
  }
  if (threads_ > 0) return;  // A worker will get to them; retried on Submit.
  // No thread at all and none can be started: run here, outside the lock,
  // rather than lose them.
  JobList mine;
  while (Job* t = queue_.Pop()) mine.Push(t);
  queued_ = 0;
  lock.unlock();
  mine.RunAll();
}

void Executor::SupervisorLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    if (queued_ <= idle_ + starting_) {
      supervise_.wait_for(lock, absl::ToChronoNanoseconds(kIdleTimeout));
      if (queued_ == 0 && threads_ == 0) break;  // Nothing to watch over.
      continue;
    }
    const int64_t now = MonoNow();
    const int64_t blocked_for = now - last_progress_ns_;
    const bool grow =
        threads_ < soft_cap_ ||
        (threads_ < hard_cap_ &&
         blocked_for >= absl::ToInt64Nanoseconds(kBlockedThreshold));
    if (grow) {
      if (TryStartThread(&Executor::WorkerLoop)) {
        ++threads_;
        ++starting_;
        peak_threads_ = std::max(peak_threads_, threads_);
        // A new worker counts as progress: the next one waits a threshold.
        if (threads_ >= soft_cap_) last_progress_ns_ = now;
        continue;
      }
      if (threads_ == 0) {
        // The system refuses every thread: run a task here so none is lost.
        Job* t = queue_.Pop();
        --queued_;
        lock.unlock();
        t->Run();
        lock.lock();
        continue;
      }
      supervise_.wait_for(lock, absl::ToChronoNanoseconds(kRetryDelay));
      continue;
    }
    if (threads_ >= hard_cap_) {
      supervise_.wait_for(lock, absl::ToChronoNanoseconds(kIdleTimeout));
      continue;
    }
    supervise_.wait_for(
        lock, std::chrono::nanoseconds(
                  absl::ToInt64Nanoseconds(kBlockedThreshold) - blocked_for));
  }
  supervisor_running_ = false;
  exited_.notify_all();
}

void Executor::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  --starting_;
  for (;;) {
    if (queued_ == 0) {
      if (stopping_) break;
      ++idle_;
      const bool got_work =
          work_.wait_for(lock, absl::ToChronoNanoseconds(kIdleTimeout),
                         [this] { return queued_ > 0 || stopping_; });
      --idle_;
      if (!got_work) break;
      continue;
    }
    Job* t = queue_.Pop();
    --queued_;
    last_progress_ns_ = MonoNow();
    lock.unlock();
    t->Run();
    lock.lock();
    if (queued_ == 0) exited_.notify_all();  // StopAtExit waits for a drain.
  }
  --threads_;
  exited_.notify_all();
}

size_t Executor::ThreadCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return threads_;
}

size_t Executor::PeakThreadCount() {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_threads_;
}

void Executor::StopAtExit() {
  std::unique_lock<std::mutex> lock(mu_);
  // Let the workers drain the queue and finish what runs, then stop them.
  const auto grace = absl::ToChronoNanoseconds(kExitGrace);
  if (threads_ > 0) {
    exited_.wait_for(lock, grace, [this] { return queued_ == 0; });
  }
  stopping_ = true;
  work_.notify_all();
  supervise_.notify_all();
  const bool joined = exited_.wait_for(lock, grace, [this] {
    return threads_ == 0 && !supervisor_running_;
  });
  // Whatever is still queued (no worker came free in time) runs here.
  JobList rest;
  while (Job* t = queue_.Pop()) rest.Push(t);
  queued_ = 0;
  lock.unlock();
  rest.RunAll();
  if (!joined) {
    std::fprintf(stderr,
                 "reqctx: an AfterFunc was still running %.1f s after exit "
                 "began; exiting without waiting for it\n",
                 absl::ToDoubleSeconds(kExitGrace));
  }
}

// fork(): hold mu_ across the fork so the child's copy is consistent.
void Executor::ForkPrepare() { mu_.lock(); }
void Executor::ForkParent() { mu_.unlock(); }
void Executor::ForkChild() {
  // Only the forking thread exists in the child. Start over with no threads;
  // queued tasks stay and get a supervisor now.
  // The condition variables may record waiters that do not exist here.
  new (&work_) std::condition_variable();
  new (&supervise_) std::condition_variable();
  new (&exited_) std::condition_variable();
  threads_ = 0;
  idle_ = 0;
  starting_ = 0;
  peak_threads_ = 0;
  supervisor_running_ = false;
  if (queued_ > 0 && !stopping_ && TryStartThread(&Executor::SupervisorLoop)) {
    supervisor_running_ = true;
  }
  mu_.unlock();
}

}  // namespace reqctx::internal
