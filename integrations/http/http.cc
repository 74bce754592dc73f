#include "integrations/http/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/waitable.h"
#include "w3c/trace_propagation.h"

namespace reqctx::http {
namespace {

// libcurl's global setup, once per process (not thread-safe itself).
bool GlobalInit() {
  static const bool ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  return ok;
}

struct Transfer {
  Response response;
  size_t max_body = 0;
  bool body_too_large = false;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  if (t->response.body.size() + len > t->max_body) {
    t->body_too_large = true;
    return 0;  // Aborts the transfer with CURLE_WRITE_ERROR.
  }
  t->response.body.append(data, len);
  return len;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  std::string_view line(data, len);
  if (absl::StartsWith(absl::string_view(line.data(), line.size()), "HTTP/")) {
    t->response.headers.clear();  // A new response (e.g. after 100 Continue).
    return len;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return len;  // The blank line.
  absl::string_view value(line.data() + colon + 1, line.size() - colon - 1);
  value = absl::StripAsciiWhitespace(value);
  t->response.headers.emplace_back(std::string(line.substr(0, colon)),
                                   std::string(value));
  return len;
}

bool HasCrLf(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos;
}

absl::Status MapCurlError(CURLcode code, const char* errbuf) {
  std::string msg = absl::StrCat("http: ", curl_easy_strerror(code));
  if (errbuf[0] != '\0') absl::StrAppend(&msg, ": ", errbuf);
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT:
      return absl::DeadlineExceededError(msg);
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
      return absl::UnavailableError(msg);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return absl::InvalidArgumentError(msg);
    case CURLE_OUT_OF_MEMORY:
      return absl::ResourceExhaustedError(msg);
    case CURLE_PEER_FAILED_VERIFICATION:
      return absl::UnauthenticatedError(msg);
    default:
      return absl::UnknownError(msg);
  }
}

// Whether the transfer got past its connect phase (TCP connect and, for
// https, the TLS handshake: what connect_timeout bounds). libcurl reports a
// pre-transfer time of 0 until then.
bool ConnectPhaseDone(CURL* e) {
  curl_off_t pretransfer_us = 0;
  return curl_easy_getinfo(e, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us) ==
             CURLE_OK &&
         pretransfer_us > 0;
}

struct EasyDeleter {
  void operator()(CURL* e) const { curl_easy_cleanup(e); }
};
struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

absl::StatusOr<Response> Do(const Context& ctx, const Request& request) {
  if (absl::Status s = ctx.Err(); !s.ok()) return s;
  if (!GlobalInit()) return absl::InternalError("http: curl_global_init failed");
  if (HasCrLf(request.url) || HasCrLf(request.method) ||
      request.method.empty()) {
    return absl::InvalidArgumentError("http: bad URL or method");
  }
  // Headers: the caller's, then the Context's trace (replacing any given).
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  auto add_header = [&headers](const std::string& line) {
    curl_slist* l = curl_slist_append(headers.get(), line.c_str());
    if (l == nullptr) return false;
    headers.release();
    headers.reset(l);
    return true;
  };
  for (const auto& [name, value] : request.headers) {
    if (HasCrLf(name) || HasCrLf(value) || name.empty() ||
        name.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("http: bad header name or value for '", name, "'"));
    }
    if (absl::EqualsIgnoreCase(name, internal::kTraceparentHeader) ||
        absl::EqualsIgnoreCase(name, internal::kTracestateHeader)) {
      continue;
    }
    if (!add_header(absl::StrCat(name, ": ", value))) {
      return absl::ResourceExhaustedError("http: out of memory");
    }
  }
  const internal::OutgoingTrace trace = internal::OutgoingTraceFor(ctx);
  if (!add_header(absl::StrCat(internal::kTraceparentHeader, ": ",
                               trace.traceparent)) ||
      (trace.tracestate.has_value() &&
       !add_header(absl::StrCat(internal::kTracestateHeader, ": ",
                                *trace.tracestate)))) {
    return absl::ResourceExhaustedError("http: out of memory");
  }

  absl::StatusOr<DoneFd> done = DoneFd::Open(ctx);
  if (!done.ok()) return done.status();

  std::unique_ptr<CURL, EasyDeleter> easy(curl_easy_init());
  std::unique_ptr<CURLM, MultiDeleter> multi(curl_multi_init());
  if (easy == nullptr || multi == nullptr) {
    return absl::ResourceExhaustedError("http: cannot create a curl handle");
  }
  CURL* e = easy.get();
  Transfer transfer;
  transfer.max_body = request.max_body_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(e, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(
      e, CURLOPT_CONNECTTIMEOUT_MS,
      static_cast<long>(std::max<int64_t>(
          1, absl::ToInt64Milliseconds(std::min(request.connect_timeout,
                                                absl::Hours(24))))));
  if (request.method == "POST" || !request.body.empty()) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(request.body.size()));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, request.body.data());
  }
  if (request.method == "HEAD") {
    // A HEAD response has headers only, whatever its Content-Length says:
    // NOBODY makes libcurl send HEAD and not wait for a body.
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (request.method != "GET" && request.method != "POST") {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (std::optional<absl::Time> deadline = ctx.Deadline()) {
    const absl::Duration left = *deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("context deadline exceeded");
    }
    // Rounded up: libcurl must not fire before the Context does.
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                     static_cast<long>(std::min<int64_t>(
                         absl::ToInt64Milliseconds(left) + 1,
                         int64_t{24} * 3600 * 1000)));
  }
  if (curl_multi_add_handle(multi.get(), e) != CURLM_OK) {
    return absl::InternalError("http: curl_multi_add_handle failed");
  }
  // The easy handle must leave the multi handle before either is cleaned
  // up; declared last, so this runs first.
  struct Detach {
    CURLM* m;
    CURL* e;
    ~Detach() { curl_multi_remove_handle(m, e); }
  } detach{multi.get(), e};

  curl_waitfd extra{done->fd(), CURL_WAIT_POLLIN, 0};
  const unsigned extra_count = done->fd() >= 0 ? 1 : 0;
  for (;;) {
    int running = 0;
    if (CURLMcode mc = curl_multi_perform(multi.get(), &running);
        mc != CURLM_OK) {
      return absl::InternalError(
          absl::StrCat("http: ", curl_multi_strerror(mc)));
    }
    if (running == 0) break;
    extra.revents = 0;
    // Waits for the transfer's sockets, libcurl's own timers (the total
    // timeout among them) or the Context's descriptor.
    if (CURLMcode mc = curl_multi_poll(multi.get(),
                                       extra_count ? &extra : nullptr,
                                       extra_count, 1000, nullptr);
        mc != CURLM_OK) {
      return absl::InternalError(
          absl::StrCat("http: ", curl_multi_strerror(mc)));
    }
    if ((extra.revents & CURL_WAIT_POLLIN) != 0 || done->IsDone()) {
      return ctx.Err();  // Detach + cleanup close the connection now.
    }
  }
  CURLcode result = CURLE_OK;
  int left = 0;
  bool finished = false;
  while (CURLMsg* msg = curl_multi_info_read(multi.get(), &left)) {
    if (msg->msg == CURLMSG_DONE && msg->easy_handle == e) {
      result = msg->data.result;
      finished = true;
    }
  }
  if (!finished) return absl::InternalError("http: transfer did not finish");
  if (result != CURLE_OK) {
    if (absl::Status s = ctx.Err(); !s.ok()) return s;
    if (transfer.body_too_large) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "http: response body larger than ", request.max_body_bytes,
          " bytes"));
    }
    if (result == CURLE_OPERATION_TIMEDOUT) {
      // Two timers can fire: the Context's deadline (CURLOPT_TIMEOUT_MS,
      // rounded up) and connect_timeout. The first is the Context's error;
      // the second, before any connection was made, is "cannot connect".
      if (ctx.Deadline().has_value() &&
          *ctx.Deadline() <= absl::Now() + absl::Milliseconds(1)) {
        return absl::DeadlineExceededError("context deadline exceeded");
      }
      if (!ConnectPhaseDone(e)) {
        return absl::UnavailableError(absl::StrCat(
            "http: cannot connect within connect_timeout (",
            absl::FormatDuration(request.connect_timeout), "): ", errbuf));
      }
    }
    return MapCurlError(result, errbuf);
  }
  long code = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
  transfer.response.status = static_cast<int>(code);
  return std::move(transfer.response);
}

absl::StatusOr<Response> Get(const Context& ctx, std::string url) {
  Request r;
  r.url = std::move(url);
  return Do(ctx, r);
}

absl::StatusOr<Response> Post(const Context& ctx, std::string url,
                              std::string body, std::string content_type) {
  Request r;
  r.method = "POST";
  r.url = std::move(url);
  r.body = std::move(body);
  r.headers.emplace_back("Content-Type", std::move(content_type));
  return Do(ctx, r);
}

}  // namespace reqctx::http
