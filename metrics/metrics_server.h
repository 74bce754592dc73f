// MetricsServer: the Prometheus scrape endpoint. Serves a metrics::Registry
// in the text format 0.0.4 at GET /metrics over HTTP/1.1, using civetweb
// (Debian's libcivetweb-dev) on its own threads.
//
//   absl::StatusOr<std::unique_ptr<reqctx::MetricsServer>> server =
//       reqctx::MetricsServer::Start({.port = 9464});
//   // scrape http://127.0.0.1:9464/metrics
//
// Isolation from RPC serving: the server has its own thread pool
// (options.threads) and never runs on gRPC's threads; a scrape reads the
// per-CPU slots with relaxed loads and takes each family's lock only to copy
// its list of children, never a lock that recording takes per call. So a
// slow client, a malformed request (answered 400/404/405 by civetweb or the
// handler), or many concurrent scrapes cost scrape latency only, never RPC
// latency beyond the CPU they use.
//
// Idle and slow clients: civetweb (1.15 in Debian 12) serves one connection
// per thread, blocking, and a connection holds its thread from the moment a
// thread takes it until its request is read and answered. A client that
// connects and sends nothing, or trickles its request line a byte at a
// time, holds one thread until request_timeout runs out (counted from when
// the thread took the connection, for the whole request, not per read);
// then civetweb closes it. So a scrape is answered at once while fewer than
// `threads` such connections are open. Past `threads`, connections wait in
// civetweb's queue (20) and then the kernel's listen backlog (200), served
// in arrival order, and a scrape waits about request_timeout per `threads`
// connections ahead of it. Measured on loopback with the defaults, a scrape
// behind 50 or 63 idle connections took 3 ms, behind 100 2.0 s, behind 200
// 6.0 s (the former 2 threads and 5 s: 9 s behind 4). allowed_peers closes
// connections from other peers before they take a thread. Each
// connection serves one request (no keep-alive). Requests over 16 KiB of
// headers are refused. Closing is ordinary (no SO_LINGER): the kernel
// finishes sending a response a slow reader has not read yet.
//
// Anything but GET or HEAD /metrics gets 404 (other paths) or 405 (other
// methods); nothing else is served (no files, no directory listings).
//
// Thread-safety: Start and port() are thread-safe; destroy the server from
// one thread. Lifetime: the registry must outlive the server; the destructor
// stops accepting, ends the requests in flight and joins civetweb's
// threads; civetweb notices the stop within its 2 s poll quantum, so it may
// take that long.
#ifndef REQCTX_METRICS_METRICS_SERVER_H_
#define REQCTX_METRICS_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <vector>

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
  // Connections served at once (civetweb's num_threads, all started with
  // the server), 1-1024. An idle or slow client holds one (see above), so
  // this is how many of them a scrape can be answered behind at once. Cheap
  // while idle: the 64 default threads added 1.4 MB resident to the echo
  // server.
  int threads = 64;
  // A connection whose request is not fully received within this time
  // (from when a thread took it), or whose response makes no progress for
  // this long, is closed (civetweb's request_timeout_ms), >= 1 ms. A scrape
  // request arrives within a round trip of its connection; 2 s leaves room
  // for retransmissions while freeing threads held by idle clients quickly.
  absl::Duration request_timeout = absl::Seconds(2);
  // Peers allowed to connect: IPv4 addresses or subnets ("10.0.0.5",
  // "10.1.0.0/16"); empty means any peer. Others are closed at accept, on
  // civetweb's accepting thread, without taking a serving thread, so with
  // address "0.0.0.0" listing the Prometheus servers keeps idle connections
  // from elsewhere from delaying scrapes at all (civetweb's
  // access_control_list).
  std::vector<std::string> allowed_peers;
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
