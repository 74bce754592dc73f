// EchoServer: an EchoService served on a loopback port, in this process.
//
// Start() binds 127.0.0.1 only (port 0 picks a free port; port() tells which)
// with reqctx's server interceptor installed. Shutdown() stops accepting
// calls, lets in-flight calls run for up to options.shutdown_grace, then
// cancels the rest (their Contexts are canceled, so their workers stop) and
// returns once all handlers have returned. The server
// binary, the demo and the end-to-end tests all use this class.
//
// Thread-safety: all methods are safe from any thread; Shutdown() is
// idempotent. Lifetime: the destructor calls Shutdown().
#ifndef REQCTX_SERVICES_ECHO_ECHO_SERVER_H_
#define REQCTX_SERVICES_ECHO_ECHO_SERVER_H_

#include <grpcpp/server.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/echo/echo_service.h"
#include "services/echo/echo_stats.h"

namespace reqctx::echo {

struct EchoServerOptions {
  std::string name = "echo";
  int port = 0;      // 0: any free port.
  std::string next;  // host:port of the next hop; empty: last hop.
  int workers = 2;
  std::string postgres;  // libpq conninfo; see EchoServiceOptions.
  int64_t max_work_ms = 3600 * 1000;  // See EchoServiceOptions (>= 0).
  // How long Shutdown() lets in-flight calls finish before canceling them
  // (0: cancel at once).
  absl::Duration shutdown_grace = absl::ZeroDuration();
};

class EchoServer {
 public:
  static absl::StatusOr<std::unique_ptr<EchoServer>> Start(
      const EchoServerOptions& options);
  ~EchoServer();
  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:<port>"
  const std::string& name() const { return service_->name(); }
  const EchoStats& stats() const { return service_->stats(); }

  void Shutdown();

 private:
  EchoServer(std::unique_ptr<EchoService> service,
             std::unique_ptr<grpc::Server> server, int port,
             absl::Duration shutdown_grace);

  const std::unique_ptr<EchoService> service_;
  const std::unique_ptr<grpc::Server> server_;
  const int port_;
  const absl::Duration shutdown_grace_;
  std::once_flag shutdown_once_;
};

}  // namespace reqctx::echo

#endif  // REQCTX_SERVICES_ECHO_ECHO_SERVER_H_
