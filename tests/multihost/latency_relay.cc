// latency_relay: a userspace TCP relay that adds a fixed one-way latency
// (the multi-host test's stand-in for netem, which this kernel lacks).
//
//   latency_relay --listen=10.77.1.2:7001 --upstream=127.0.0.1:7000
//                 --latency_ms=20
//
// Every byte read from one side is written to the other `latency_ms` after
// it was read, in order, in both directions, for each accepted connection
// (a fresh upstream connection per accepted one). A side's end of stream is
// passed on (shutdown of the write side) after the bytes before it. Prints
// "relay listening on ADDR:PORT" once accepting; runs until killed.
// IPv4 only. Each connection uses four threads (a reader and a writer per
// direction); a test tool, not a proxy for production.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0", "IPv4 address:port to accept on");
ABSL_FLAG(std::string, upstream, "", "IPv4 address:port to relay to");
ABSL_FLAG(int, latency_ms, 0, "one-way delay added to every byte");

namespace {

using Clock = std::chrono::steady_clock;

std::optional<sockaddr_in> ParseAddress(const std::string& s) {
  std::vector<std::string> parts = absl::StrSplit(s, ':');
  int port = 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port) || port < 0 ||
      port > 65535 || inet_pton(AF_INET, parts[0].c_str(), &a.sin_addr) != 1) {
    return std::nullopt;
  }
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

// One direction of one connection: `from` -> delay -> `to`.
class Pipe {
 public:
  Pipe(int from, int to, Clock::duration latency)
      : from_(from), to_(to), latency_(latency) {}

  void Run() {
    std::thread writer([this] { Write(); });
    Read();
    writer.join();
  }

 private:
  struct Chunk {
    Clock::time_point due;
    std::string bytes;  // Empty: end of stream.
  };

  void Read() {
    char buf[64 * 1024];
    while (true) {
      ssize_t n = read(from_, buf, sizeof(buf));
      const auto due = Clock::now() + latency_;
      std::lock_guard<std::mutex> lock(mu_);
      if (n <= 0) {
        chunks_.push_back({due, std::string()});
        cv_.notify_all();
        return;
      }
      chunks_.push_back({due, std::string(buf, static_cast<size_t>(n))});
      cv_.notify_all();
    }
  }

  void Write() {
    while (true) {
      Chunk c;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !chunks_.empty(); });
        c = std::move(chunks_.front());
        chunks_.pop_front();
      }
      std::this_thread::sleep_until(c.due);
      if (c.bytes.empty()) {
        shutdown(to_, SHUT_WR);
        return;
      }
      size_t off = 0;
      while (off < c.bytes.size()) {
        ssize_t n = write(to_, c.bytes.data() + off, c.bytes.size() - off);
        if (n <= 0) {
          // The other side is gone: stop reading too.
          shutdown(from_, SHUT_RD);
          return;
        }
        off += static_cast<size_t>(n);
      }
    }
  }

  const int from_;
  const int to_;
  const Clock::duration latency_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk> chunks_;
};

void Serve(int client, sockaddr_in upstream, Clock::duration latency) {
  int server = socket(AF_INET, SOCK_STREAM, 0);
  if (server < 0 ||
      connect(server, reinterpret_cast<sockaddr*>(&upstream),
              sizeof(upstream)) != 0) {
    if (server >= 0) close(server);
    close(client);
    return;
  }
  int one = 1;
  setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  Pipe up(client, server, latency);
  Pipe down(server, client, latency);
  std::thread t([&] { down.Run(); });
  up.Run();
  t.join();
  close(client);
  close(server);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  std::optional<sockaddr_in> listen_at = ParseAddress(absl::GetFlag(FLAGS_listen));
  std::optional<sockaddr_in> upstream = ParseAddress(absl::GetFlag(FLAGS_upstream));
  if (!listen_at || !upstream || absl::GetFlag(FLAGS_latency_ms) < 0) {
    std::fprintf(stderr,
                 "latency_relay: need --listen=A.B.C.D:PORT "
                 "--upstream=A.B.C.D:PORT --latency_ms>=0\n");
    return 2;
  }
  const Clock::duration latency =
      std::chrono::milliseconds(absl::GetFlag(FLAGS_latency_ms));
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (s < 0 ||
      bind(s, reinterpret_cast<sockaddr*>(&*listen_at), sizeof(*listen_at)) !=
          0 ||
      listen(s, 64) != 0) {
    std::perror("latency_relay: listen");
    return 1;
  }
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  getsockname(s, reinterpret_cast<sockaddr*>(&bound), &len);
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &bound.sin_addr, ip, sizeof(ip));
  std::printf("relay listening on %s:%d\n", ip, ntohs(bound.sin_port));
  std::fflush(stdout);
  while (true) {
    int c = accept(s, nullptr, nullptr);
    if (c < 0) continue;
    std::thread(Serve, c, *upstream, latency).detach();
  }
}
