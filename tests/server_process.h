// Test helper: the real //services/echo:server binary (a data dependency of
// the test) run as a subprocess on a free loopback port, its stdout captured,
// stopped by signals sent to its pid only.
//
// Thread-safety: one test thread uses an object. Lifetime: the destructor
// SIGKILLs and reaps the process if the test did not see it exit, so a failed
// test never leaks it.
#ifndef REQCTX_TESTS_SERVER_PROCESS_H_
#define REQCTX_TESTS_SERVER_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace reqctx::testing {

class ServerProcess {
 public:
  ServerProcess() = default;
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess();

  // Starts it with --name=subprocess --port=0 plus `extra_args`, and waits
  // (bounded by kWaitBound) for its "listening on" line. With
  // `with_stderr`, output() has its stderr (its log lines) too.
  bool Start(const std::vector<std::string>& extra_args = {},
             bool with_stderr = false);
  // Sends `signal` to the process.
  bool Signal(int signal);
  // Waits (bounded by `bound`) until stdout contains `text`.
  bool WaitForOutput(const std::string& text, absl::Duration bound);
  // True while the process has not exited (reaps it if it has).
  bool Running();
  // Waits (bounded) for the exit; the wait status, or -1 if it did not exit.
  int WaitExit(absl::Duration bound);
  // Signal(SIGTERM), then WaitExit(kWaitBound).
  int Terminate();

  const std::string& address() const { return address_; }
  // The process id (-1 before Start); only for reading /proc/PID.
  pid_t pid() const { return pid_; }
  const std::string& output() const { return output_; }

 private:
  // Appends what the child wrote; false on EOF, error or `end`.
  bool ReadSome(absl::Time end);

  pid_t pid_ = -1;
  int out_ = -1;
  int wait_status_ = -1;  // Set once reaped.
  std::string output_;
  std::string address_;
};

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_SERVER_PROCESS_H_
