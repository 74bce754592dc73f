#include "tests/server_process.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"

extern char** environ;

namespace reqctx::testing {

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {  // The test failed before a clean stop: don't leak it.
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (out_ >= 0) close(out_);
}

bool ServerProcess::Start(const std::vector<std::string>& extra_args,
                          bool with_stderr) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return false;
  const std::string binary =
      absl::StrCat(srcdir, "/", workspace, "/services/echo/server");
  int fds[2];
  if (pipe(fds) != 0) return false;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  if (with_stderr) {
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  }
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  posix_spawn_file_actions_addclose(&actions, fds[1]);
  std::vector<std::string> args = {binary, "--name=subprocess", "--port=0"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(),
                       environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  out_ = fds[0];
  if (rc != 0) {
    pid_ = -1;
    return false;
  }
  const std::string marker = "listening on ";
  if (!WaitForOutput(marker, kWaitBound)) return false;
  const absl::Time end = absl::Now() + kWaitBound;
  while (output_.find('\n', output_.find(marker)) == std::string::npos) {
    if (!ReadSome(end)) return false;
  }
  size_t at = output_.find(marker) + marker.size();
  address_ = output_.substr(at, output_.find('\n', at) - at);
  return true;
}

bool ServerProcess::Signal(int signal) {
  return pid_ > 0 && kill(pid_, signal) == 0;
}

bool ServerProcess::WaitForOutput(const std::string& text,
                                  absl::Duration bound) {
  const absl::Time end = absl::Now() + bound;
  while (output_.find(text) == std::string::npos) {
    if (!ReadSome(end)) return false;
  }
  return true;
}

bool ServerProcess::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) != pid_) return true;
  pid_ = -1;
  wait_status_ = status;
  return false;
}

int ServerProcess::WaitExit(absl::Duration bound) {
  if (pid_ > 0) {
    // The child has no exit event to wait on here (SIGCHLD belongs to the
    // test runner): poll waitpid, bounded.
    if (!Eventually([this] { return !Running(); }, bound)) return -1;
  }
  while (ReadSome(absl::Now() + absl::Seconds(1))) {
  }
  return wait_status_;
}

int ServerProcess::Terminate() {
  if (!Signal(SIGTERM)) return -1;
  return WaitExit(kWaitBound);
}

bool ServerProcess::ReadSome(absl::Time end) {
  pollfd p{out_, POLLIN, 0};
  int ms = static_cast<int>(
      std::max<int64_t>(0, absl::ToInt64Milliseconds(end - absl::Now())));
  if (poll(&p, 1, ms) <= 0) return false;
  char buf[4096];
  ssize_t n = read(out_, buf, sizeof(buf));
  if (n <= 0) return false;
  output_.append(buf, static_cast<size_t>(n));
  return true;
}

}  // namespace reqctx::testing
