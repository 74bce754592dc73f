#include "tests/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace reqctx::testing {
namespace {

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int RemainingMs(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return ms < 0 ? 0 : static_cast<int>(ms);
}

}  // namespace

absl::StatusOr<HttpResponse> RawHttp(int port, std::string_view request,
                                     absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const int fd = Connect(port);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("connect: ", errno));
  size_t sent = 0;
  while (sent < request.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, RemainingMs(deadline)) <= 0) {
      close(fd);
      return absl::DeadlineExceededError("send timed out");
    }
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent,
                           MSG_NOSIGNAL);
    if (n <= 0) break;  // The server may close early on a bad request.
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[16384];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, RemainingMs(deadline)) <= 0) {
      close(fd);
      return absl::DeadlineExceededError("no end of response in time");
    }
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  HttpResponse r;
  const size_t end = raw.find("\r\n\r\n");
  r.headers = raw.substr(0, end);
  if (end != std::string::npos) r.body = raw.substr(end + 4);
  if (raw.rfind("HTTP/1.", 0) == 0 && raw.size() >= 12) {
    r.status = std::atoi(raw.substr(9, 3).c_str());
  }
  return r;
}

absl::StatusOr<HttpResponse> HttpGet(int port, std::string_view path,
                                     absl::Duration timeout) {
  return RawHttp(port,
                 absl::StrCat("GET ", absl::string_view(path.data(), path.size()),
                              " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Connection: close\r\n\r\n"),
                 timeout);
}

StalledClient::StalledClient(int port, std::string_view partial)
    : fd_(Connect(port)) {
  if (fd_ >= 0 && !partial.empty()) {
    (void)send(fd_, partial.data(), partial.size(), MSG_NOSIGNAL);
  }
}

StalledClient::~StalledClient() {
  if (fd_ >= 0) close(fd_);
}

bool StalledClient::ClosedByServer(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  char buf[4096];
  while (fd_ >= 0) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, RemainingMs(deadline)) <= 0) return false;
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return true;  // EOF or reset: closed.
  }
  return false;
}

double ExpositionSample(const std::string& page, const std::string& series) {
  const std::string key = series + " ";
  size_t pos = 0;
  while ((pos = page.find(key, pos)) != std::string::npos) {
    if (pos == 0 || page[pos - 1] == '\n') {
      return std::strtod(page.c_str() + pos + key.size(), nullptr);
    }
    pos += key.size();
  }
  return 0;
}

}  // namespace reqctx::testing
