// A minimal HTTP/1.1 client for tests: sends raw request bytes to a loopback
// port and reads the response until the server closes the connection. Raw
// bytes so that tests can send malformed requests too.
//
// Thread-safety: each call is independent. Every wait is bounded by the
// given timeout.
#ifndef REQCTX_TESTS_HTTP_CLIENT_H_
#define REQCTX_TESTS_HTTP_CLIENT_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace reqctx::testing {

struct HttpResponse {
  int status = 0;        // From the status line; 0 if there was none.
  std::string headers;   // The header block, status line included.
  std::string body;
};

// Sends `request` verbatim to 127.0.0.1:`port` and reads until EOF.
// kDeadlineExceeded if the whole exchange takes longer than `timeout`.
absl::StatusOr<HttpResponse> RawHttp(int port, std::string_view request,
                                     absl::Duration timeout);
// GET `path` with Connection: close.
absl::StatusOr<HttpResponse> HttpGet(int port, std::string_view path,
                                     absl::Duration timeout = absl::Seconds(10));

// The value of the line `series` (its exact name and labels, e.g.
// `reqctx_server_started_total{method="/a.B/C"}`) in a Prometheus text
// exposition `page`; 0 if absent.
double ExpositionSample(const std::string& page, const std::string& series);

// A connected socket to 127.0.0.1:`port` that has sent `partial` and then
// stalls (a slow client), closed by the destructor. fd() < 0 if the
// connection failed.
class StalledClient {
 public:
  StalledClient(int port, std::string_view partial);
  ~StalledClient();
  StalledClient(const StalledClient&) = delete;
  StalledClient& operator=(const StalledClient&) = delete;
  int fd() const { return fd_; }
  // True once the server has closed the connection (within `timeout`).
  bool ClosedByServer(absl::Duration timeout);

 private:
  int fd_ = -1;
};

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_HTTP_CLIENT_H_
