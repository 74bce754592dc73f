#include "services/echo/echo_server.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "interceptors/interceptors.h"

namespace reqctx::echo {

absl::StatusOr<std::unique_ptr<EchoServer>> EchoServer::Start(
    const EchoServerOptions& options) {
  if (options.port < 0 || options.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad port ", options.port));
  }
  if (options.workers < 1) {
    return absl::InvalidArgumentError("workers must be >= 1");
  }
  if (options.max_work_ms < 0) {
    return absl::InvalidArgumentError("max_work_ms must be >= 0");
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("shutdown_grace must be >= 0");
  }
  auto service = std::make_unique<EchoService>(EchoServiceOptions{
      options.name, options.next, options.workers, options.postgres,
      options.max_work_ms});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::StrCat("127.0.0.1:", options.port),
                           grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service.get());
  InstallServerInterceptors(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on 127.0.0.1:", options.port));
  }
  return std::unique_ptr<EchoServer>(
      new EchoServer(std::move(service), std::move(server), port,
                     options.shutdown_grace));
}

EchoServer::EchoServer(std::unique_ptr<EchoService> service,
                       std::unique_ptr<grpc::Server> server, int port,
                       absl::Duration shutdown_grace)
    : service_(std::move(service)),
      server_(std::move(server)),
      port_(port),
      shutdown_grace_(shutdown_grace) {}

EchoServer::~EchoServer() { Shutdown(); }

std::string EchoServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

void EchoServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    // gRPC cancels the calls still in flight when this deadline passes (at
    // once for a grace of 0); the interceptor turns that into canceled
    // Contexts.
    server_->Shutdown(std::chrono::system_clock::now() +
                      absl::ToChronoNanoseconds(shutdown_grace_));
    server_->Wait();
  });
}

}  // namespace reqctx::echo
