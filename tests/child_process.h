// Test helper: a subprocess started from an argv, its stdout and stderr
// going to a log file (so a chatty child never blocks on a full pipe),
// stopped by signals sent to its own pid only.
//
// Thread-safety: one test thread uses an object. Lifetime: the destructor
// SIGKILLs and reaps the process if it is still running, so a failed test
// never leaks it.
#ifndef REQCTX_TESTS_CHILD_PROCESS_H_
#define REQCTX_TESTS_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace reqctx::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  // Starts argv[0] with `argv`, output appended to `log_path`.
  bool Start(const std::vector<std::string>& argv, const std::string& log_path);
  // The log so far.
  std::string Output() const;
  // Waits (bounded by `bound`, re-reading the log every 20 ms) until the log
  // contains `text`; false at the bound or if the process exited first.
  bool WaitForOutput(const std::string& text, absl::Duration bound);
  // SIGTERM, then waits up to `bound` for the exit (SIGKILL after it).
  // Returns the wait status, or -1.
  int Stop(absl::Duration bound);
  bool Running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::string log_path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, then
// released), or 0.
int FreeLoopbackPort();

// A fresh directory under $TEST_TMPDIR (or /tmp); "" on failure.
std::string MakeTempDir(const std::string& prefix);

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_CHILD_PROCESS_H_
