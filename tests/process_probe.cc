// Process probes for tests (see process_probe.h), read from /proc.
#include "tests/process_probe.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/time/clock.h"

namespace reqctx::testing {

int ThreadCount() { return ThreadCountOf(-1); }

int ThreadCountOf(int pid) {
  std::ifstream status(pid < 0 ? std::string("/proc/self/status")
                               : "/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::stoi(line.substr(8));
  }
  return -1;
}

int CurrentThreadId() { return static_cast<int>(gettid()); }

bool WaitUntilThreadBlocked(int tid, absl::Duration bound) {
  const std::string path =
      "/proc/self/task/" + std::to_string(tid) + "/stat";
  return Eventually(
      [&] {
        std::ifstream stat(path);
        std::string all;
        std::getline(stat, all);
        // "pid (comm) S ...": the state follows the last ')'.
        const size_t paren = all.rfind(')');
        if (paren == std::string::npos || paren + 2 >= all.size()) {
          return false;
        }
        const char state = all[paren + 2];
        return state == 'S' || state == 'D';
      },
      bound);
}

int64_t ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size_pages = 0;
  int64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return -1;
  return resident_pages * sysconf(_SC_PAGESIZE);
}

int UnusedLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);  // Never listened on: connecting is refused.
  return port;
}

bool Eventually(const std::function<bool()>& done, absl::Duration bound) {
  const absl::Time end = absl::Now() + bound;
  while (!done()) {
    if (absl::Now() > end) return done();
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

}  // namespace reqctx::testing
