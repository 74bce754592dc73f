// MetricsServer: the Prometheus scrape endpoint. Serves a metrics::Registry
// in the text format 0.0.4 at GET /metrics over HTTP/1.1, using civetweb
// (Debian's libcivetweb-dev) on its own threads.
//
//   absl::StatusOr<std::unique_ptr<reqctx::MetricsServer>> server =
//       reqctx::MetricsServer::Start({.port = 9464});
//   // scrape http://127.0.0.1:9464/metrics
//
// Isolation from RPC serving: the server has its own small thread pool
// (options.threads) and never runs on gRPC's threads; a scrape reads the
// per-CPU slots with relaxed loads and takes each family's lock only to copy
// its list of children, never a lock that recording takes per call. So a
// slow client (cut off after options.request_timeout), a malformed request
// (answered 400/404/405 by civetweb or the handler), or many concurrent
// scrapes (queued by civetweb, served options.threads at a time) cost scrape
// latency only, never RPC latency beyond the CPU they use.
//
// Anything but GET or HEAD /metrics gets 404 (other paths) or 405 (other
// methods); nothing else is served (no files, no directory listings).
//
// Thread-safety: Start and port() are thread-safe; destroy the server from
// one thread. Lifetime: the registry must outlive the server; the destructor
// stops accepting, waits for in-flight requests (each bounded by
// request_timeout), and joins civetweb's threads.
#ifndef REQCTX_METRICS_METRICS_SERVER_H_
#define REQCTX_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "metrics/metrics.h"

struct mg_context;
struct mg_connection;

namespace reqctx {

struct MetricsServerOptions {
  // Interface to listen on: an IPv4 address, or an IPv6 one in brackets
  // ("[::1]") where civetweb was built with IPv6 (SupportsIpv6(); Debian
  // 12's is not). Loopback by default; "0.0.0.0" for a remote Prometheus.
  std::string address = "127.0.0.1";
  // TCP port; 0 picks a free one (see port()).
  int port = 0;
  // Requests served at once; more connections wait in civetweb's queue.
  int threads = 2;
  // A request not fully read, or a response not written, within this time
  // is dropped: a slow or stalled client holds a thread at most this long.
  absl::Duration request_timeout = absl::Seconds(5);
  // What to serve; nullptr means metrics::Registry::Default().
  metrics::Registry* registry = nullptr;
};

class MetricsServer {
 public:
  // Starts serving. Errors: kInvalidArgument for bad options,
  // kUnimplemented for an IPv6 address without SupportsIpv6(), kUnavailable
  // if the address cannot be bound (with civetweb's reason).
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      MetricsServerOptions options);

  // Whether the linked civetweb listens on IPv6 addresses.
  static bool SupportsIpv6();

  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The port actually listened on.
  int port() const { return port_; }

 private:
  MetricsServer(metrics::Registry* registry) : registry_(registry) {}
  static int Handle(::mg_connection* conn, void* self);

  metrics::Registry* const registry_;
  struct mg_context* ctx_ = nullptr;
  int port_ = 0;
};

}  // namespace reqctx

#endif  // REQCTX_METRICS_METRICS_SERVER_H_
