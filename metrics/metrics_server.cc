#include "metrics/metrics_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>

#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace reqctx {
namespace {

constexpr int kMaxThreads = 1024;

void InitCivetwebOnce() {
  static std::once_flag once;
  std::call_once(once, [] { mg_init_library(0); });
}

// civetweb's own messages (bad requests, timeouts) are the peer's problem,
// not the service's: not printed.
int QuietLog(const ::mg_connection*, const char*) { return 1; }

void SendText(::mg_connection* conn, int status, std::string_view reason,
              std::string_view body, bool head, std::string_view extra = {}) {
  std::string response = absl::StrCat(
      "HTTP/1.1 ", status, " ", absl::string_view(reason.data(), reason.size()),
      "\r\nContent-Type: ",
      status == 200 ? metrics::kTextFormatContentType
                    : "text/plain; charset=utf-8",
      "\r\nContent-Length: ", body.size(),
      "\r\nConnection: close\r\nCache-Control: no-store\r\n",
      absl::string_view(extra.data(), extra.size()), "\r\n");
  if (!head) response.append(body);
  mg_write(conn, response.data(), response.size());
}

// civetweb's access_control_list for `peers`: deny all, then allow each;
// "" for no list. Each entry must be an IPv4 address with an optional
// /prefix (0-32).
absl::StatusOr<std::string> AccessControlList(
    const std::vector<std::string>& peers) {
  std::string acl;
  for (const std::string& peer : peers) {
    const size_t slash = peer.find('/');
    const std::string address = peer.substr(0, slash);
    in_addr parsed;
    int prefix = 32;
    const bool ok =
        inet_pton(AF_INET, address.c_str(), &parsed) == 1 &&
        (slash == std::string::npos ||
         (absl::SimpleAtoi(peer.substr(slash + 1), &prefix) && prefix >= 0 &&
          prefix <= 32 && peer.size() > slash + 1 &&
          peer.find_first_not_of("0123456789", slash + 1) ==
              std::string::npos));
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics server: allowed_peers entry \"", peer,
          "\" is not an IPv4 address or subnet (a.b.c.d[/n])"));
    }
    absl::StrAppend(&acl, acl.empty() ? "-0.0.0.0/0" : "", ",+", peer);
  }
  return acl;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    MetricsServerOptions options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics server: port ", options.port, " out of range"));
  }
  if (options.threads < 1 || options.threads > kMaxThreads) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics server: threads must be 1-", kMaxThreads,
                     ", not ", options.threads));
  }
  if (options.address.empty() ||
      options.address.find_first_of(", \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics server: bad address \"", options.address, "\""));
  }
  const int64_t timeout_ms = absl::ToInt64Milliseconds(options.request_timeout);
  if (timeout_ms < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics server: request_timeout must be at least 1 ms, not ",
        absl::FormatDuration(options.request_timeout)));
  }
  absl::StatusOr<std::string> acl = AccessControlList(options.allowed_peers);
  if (!acl.ok()) return acl.status();
  InitCivetwebOnce();
  if (options.address.front() == '[' && !SupportsIpv6()) {
    return absl::UnimplementedError(absl::StrCat(
        "metrics server: this civetweb has no IPv6; cannot listen on ",
        options.address));
  }
  metrics::Registry* registry = options.registry != nullptr
                                    ? options.registry
                                    : &metrics::Registry::Default();
  std::unique_ptr<MetricsServer> server(new MetricsServer(registry));

  const std::string ports = absl::StrCat(options.address, ":", options.port);
  const std::string threads = absl::StrCat(options.threads);
  const std::string timeout = absl::StrCat(timeout_ms);
  const char* config[] = {
      "listening_ports", ports.c_str(),
      "num_threads", threads.c_str(),
      "request_timeout_ms", timeout.c_str(),
      // One request per connection: no idle keep-alive connection holds a
      // thread between scrapes.
      "enable_keep_alive", "no",
      // A scrape request is one short line and a few headers.
      "max_request_size", "16384",
      // civetweb's defaults, spelled out (see the header): accepted
      // connections waiting for a thread, then the kernel's backlog.
      "connection_queue", "20",
      "listen_backlog", "200",
      // No linger option: an ordinary close, so the kernel still delivers a
      // response the client has not read yet (a zero linger would reset the
      // connection and drop it).
      //
      // allowed_peers, if any (else a nullptr name ends the list here).
      acl->empty() ? nullptr : "access_control_list", acl->c_str(),
      nullptr};
  struct mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = QuietLog;
  struct mg_init_data init = {&callbacks, server.get(), config};
  char error_text[256] = {};
  unsigned error_code = 0;
  struct mg_error_data error = {&error_code, error_text, sizeof(error_text)};
  server->ctx_ = mg_start2(&init, &error);
  if (server->ctx_ == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "metrics server: cannot listen on ", ports, ": ", error_text));
  }
  mg_set_request_handler(server->ctx_, "/", &MetricsServer::Handle,
                         server.get());
  struct mg_server_port bound[4];
  const int n = mg_get_server_ports(server->ctx_, 4, bound);
  if (n < 1) {
    return absl::UnavailableError(
        absl::StrCat("metrics server: no port bound for ", ports));
  }
  server->port_ = bound[0].port;
  return server;
}

bool MetricsServer::SupportsIpv6() {
  InitCivetwebOnce();
  return mg_check_feature(MG_FEATURES_IPV6) != 0;
}

MetricsServer::~MetricsServer() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

int MetricsServer::Handle(::mg_connection* conn, void* self) {
  const struct mg_request_info* info = mg_get_request_info(conn);
  const std::string_view method =
      info != nullptr && info->request_method ? info->request_method : "";
  const std::string_view uri =
      info != nullptr && info->local_uri ? info->local_uri : "";
  const bool head = method == "HEAD";
  if (uri != "/metrics") {
    SendText(conn, 404, "Not Found", "not found: only /metrics is served\n",
             head);
    return 404;
  }
  if (method != "GET" && !head) {
    SendText(conn, 405, "Method Not Allowed", "only GET and HEAD\n", false,
             "Allow: GET, HEAD\r\n");
    return 405;
  }
  const std::string body =
      static_cast<MetricsServer*>(self)->registry_->Expose();
  SendText(conn, 200, "OK", body, head);
  return 200;
}

}  // namespace reqctx
