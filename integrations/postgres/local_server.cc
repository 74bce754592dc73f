#include "integrations/postgres/local_server.h"

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <postgresql/libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace reqctx::postgres {
namespace {

constexpr char kBinDir[] = "/usr/lib/postgresql/15/bin";

struct RunAs {
  bool drop = false;  // Root: run as `postgres`.
  uid_t uid = 0;
  gid_t gid = 0;
};

// A command to run, prepared before fork(): the child of a multithreaded
// process may only make async-signal-safe calls, so no allocation there.
struct Command {
  Command(const std::string& log, std::vector<std::string> a)
      : log_path(log), argv(std::move(a)) {
    for (std::string& s : argv) ptrs.push_back(s.data());
    ptrs.push_back(nullptr);
  }
  std::string log_path;
  std::vector<std::string> argv;
  std::vector<char*> ptrs;
};

// In a forked child: become `as` (when dropping), stay tied to the parent's
// life, send output to the log, exec. Never returns.
[[noreturn]] void ExecChild(const RunAs& as, const Command& cmd) {
  if (as.drop) {
    if (setgroups(0, nullptr) != 0 || setgid(as.gid) != 0 ||
        setuid(as.uid) != 0) {
      _exit(126);
    }
  }
  // Set after the uid change (which clears it); kept across exec.
  prctl(PR_SET_PDEATHSIG, SIGQUIT);
  if (getppid() == 1) _exit(125);  // The parent is already gone.
  const int log = open(cmd.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                       0600);
  if (log >= 0) {
    dup2(log, 1);
    dup2(log, 2);
    close(log);
  }
  const int null = open("/dev/null", O_RDONLY);
  if (null >= 0) {
    dup2(null, 0);
    close(null);
  }
  execv(cmd.ptrs[0], cmd.ptrs.data());
  _exit(127);
}

// Waits up to `limit` for child `pid` to exit (woken by its pidfd, not by
// polling). Returns true and its wait status if it did.
bool WaitExit(pid_t pid, absl::Duration limit, int* status) {
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  const absl::Time end = absl::Now() + limit;
  for (;;) {
    const pid_t r = waitpid(pid, status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) {
      if (pidfd >= 0) close(pidfd);
      return true;
    }
    const absl::Duration left = end - absl::Now();
    if (left <= absl::ZeroDuration()) {
      if (pidfd >= 0) close(pidfd);
      return false;
    }
    const int ms = static_cast<int>(
        absl::ToInt64Milliseconds(std::min(left, absl::Seconds(1))) + 1);
    if (pidfd >= 0) {
      pollfd p{pidfd, POLLIN, 0};
      poll(&p, 1, ms);
    } else {
      absl::SleepFor(absl::Milliseconds(10));  // Kernel without pidfd_open.
    }
  }
}

// Runs `cmd` to completion (killed after `limit`); its exit code or -1.
int RunToEnd(const RunAs& as, const Command& cmd, absl::Duration limit) {
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) ExecChild(as, cmd);
  int status = 0;
  if (!WaitExit(pid, limit, &status)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > 2000 ? s.substr(s.size() - 2000) : s;
}

// A port on 127.0.0.1 that was free a moment ago.
int FreePort() {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  close(s);
  return port;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalServer>> LocalServer::Start() {
  const std::string bin = kBinDir;
  if (access((bin + "/postgres").c_str(), X_OK) != 0 ||
      access((bin + "/initdb").c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("PostgreSQL 15 is not installed (no ", bin,
                     "/postgres): run tools/setup.sh (package postgresql)"));
  }
  RunAs as;
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) {
      return absl::FailedPreconditionError(
          "running as root and there is no `postgres` user to run PostgreSQL "
          "as (the postgresql package creates it)");
    }
    as = {true, pw->pw_uid, pw->pw_gid};
  }
  char tmpl[] = "/tmp/reqctx-pg-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", strerror(errno)));
  }
  std::unique_ptr<LocalServer> server(new LocalServer());
  server->dir_ = tmpl;
  const std::string& dir = server->dir_;
  if (as.drop && chown(dir.c_str(), as.uid, as.gid) != 0) {
    // EINVAL: a user namespace without that uid (e.g. Bazel's linux-sandbox;
    // such tests are tagged no-sandbox).
    return absl::InternalError(absl::StrCat(
        "chown ", dir, " to postgres: ", strerror(errno),
        errno == EINVAL ? " (a user namespace that does not map the postgres "
                          "uid: run outside the sandbox)"
                        : ""));
  }
  const std::string log = dir + "/log";
  const Command initdb(log, {bin + "/initdb", "-D", dir + "/data", "-A",
                            "trust", "-U", "postgres", "--no-sync", "-E",
                            "UTF8", "--locale=C"});
  if (RunToEnd(as, initdb, absl::Seconds(120)) != 0) {
    return absl::InternalError(absl::StrCat("initdb failed: ", Tail(log)));
  }
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int port = FreePort();
    if (port <= 0) return absl::InternalError("no free port on 127.0.0.1");
    const Command postgres(
        log, {bin + "/postgres", "-D", dir + "/data", "-p",
              std::to_string(port), "-k", dir, "-c",
              "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
              "max_connections=100"});
    const pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) ExecChild(as, postgres);
    server->pid_ = pid;
    server->port_ = port;
    server->conninfo_ = absl::StrCat("host=127.0.0.1 port=", port,
                                     " user=postgres dbname=postgres");
    const absl::Time end = absl::Now() + absl::Seconds(60);
    bool exited = false;
    while (absl::Now() < end) {
      if (PQping(server->conninfo_.c_str()) == PQPING_OK) return server;
      int status;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        exited = true;
        server->pid_ = -1;
        break;
      }
      // Readiness has no event to wait on: ask again shortly.
      absl::SleepFor(absl::Milliseconds(50));
    }
    if (!exited) {
      return absl::DeadlineExceededError(absl::StrCat(
          "PostgreSQL not ready within 60 s: ", Tail(log)));
    }
    // Exited: most likely the port was taken meanwhile; try another.
  }
  return absl::InternalError(
      absl::StrCat("PostgreSQL did not start: ", Tail(log)));
}

void LocalServer::Stop() {
  if (pid_ > 0) {
    kill(pid_, SIGINT);  // Fast shutdown: aborts sessions, exits cleanly.
    int status;
    if (!WaitExit(pid_, absl::Seconds(10), &status)) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    dir_.clear();
  }
}

LocalServer::~LocalServer() { Stop(); }

}  // namespace reqctx::postgres
