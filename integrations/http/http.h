// HTTP calls bound to a Context (libcurl, Debian's libcurl4-openssl-dev).
//
//   absl::StatusOr<http::Response> r = http::Get(ctx, "http://svc/items");
//   if (!r.ok()) return r.status();  // kDeadlineExceeded, kCancelled, ...
//   if (r->status != 200) ...
//
// The call runs on libcurl's multi interface, waiting in one
// curl_multi_poll() on the transfer's sockets and the Context's descriptor
// (DoneFd): the moment the Context is done the transfer is aborted (its
// connection closed) and the call returns the Context's error. The
// Context's deadline also becomes the transfer's total timeout
// (CURLOPT_TIMEOUT_MS), so libcurl itself never runs past it. The Context's
// W3C trace (its traceparent, and tracestate if it has one) is sent as the
// `traceparent` / `tracestate` headers, written by //interceptors (the same
// writer as for gRPC calls: a Context without a trace starts a new one).
//
// Errors (transport only; an HTTP status such as 404 or 503 is a successful
// call with Response::status set):
//   kCancelled / kDeadlineExceeded  the Context was done first (or the
//       deadline, as libcurl's total timeout, ran out);
//   kUnavailable        cannot resolve or connect (refused, or no
//       connection within Request::connect_timeout while the Context's
//       deadline has not passed), connection reset, nothing or a truncated
//       response received, TLS handshake failed;
//   kInvalidArgument    malformed URL, a scheme other than http/https, a
//       header with CR/LF;
//   kResourceExhausted  the body exceeds Request::max_body_bytes, or out of
//       memory;
//   kUnauthenticated    the server's TLS certificate did not verify;
//   kUnknown / kInternal  anything else (libcurl's message included).
//
// Thread-safety: any number of calls may run at once from any threads; each
// uses its own libcurl handles (no connection is reused across calls).
// Lifetime: nothing outlives the call.
#ifndef REQCTX_INTEGRATIONS_HTTP_HTTP_H_
#define REQCTX_INTEGRATIONS_HTTP_HTTP_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "context/core.h"

namespace reqctx::http {

struct Request {
  // "GET", "POST", or any other verb. "HEAD" reads the headers only (the
  // response has no body, whatever its Content-Length says).
  std::string method = "GET";
  std::string url;             // http:// or https:// only.
  // Extra request headers ("Name", "value"). traceparent/tracestate are
  // added from the Context (values given here for them are replaced).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;  // Sent when non-empty or when method is POST.
  // Bounds the connect phase on its own (the Context bounds everything);
  // when it runs out first the call fails with kUnavailable.
  absl::Duration connect_timeout = absl::Seconds(30);
  // A larger response body fails the call with kResourceExhausted.
  size_t max_body_bytes = 64 << 20;
};

struct Response {
  int status = 0;  // The HTTP status code, e.g. 200.
  // Response headers in arrival order, names as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// Performs `request` under `ctx` as the file comment describes. A Context
// already done returns its error without connecting.
absl::StatusOr<Response> Do(const Context& ctx, const Request& request);

// GET `url`.
absl::StatusOr<Response> Get(const Context& ctx, std::string url);
// POST `body` to `url` with the given Content-Type.
absl::StatusOr<Response> Post(const Context& ctx, std::string url,
                              std::string body,
                              std::string content_type = "application/json");

}  // namespace reqctx::http

#endif  // REQCTX_INTEGRATIONS_HTTP_HTTP_H_
