#include "tests/echo_chain.h"

#include <grpcpp/security/credentials.h>

#include <utility>

#include "interceptors/interceptors.h"

namespace reqctx::testing {

EchoChain::EchoChain(
    int workers,
    std::function<void(echo::EchoServerOptions&)> configure_frontend) {
  auto start = [&](const std::string& name, const std::string& next) {
    echo::EchoServerOptions options;
    options.name = name;
    options.next = next;
    options.workers = workers;
    if (name == "frontend" && configure_frontend) configure_frontend(options);
    return echo::EchoServer::Start(options);
  };
  auto backend = start("backend", "");
  if (!backend.ok()) {
    status_ = backend.status();
    return;
  }
  backend_ = std::move(*backend);
  auto middle = start("middle", backend_->address());
  if (!middle.ok()) {
    status_ = middle.status();
    return;
  }
  middle_ = std::move(*middle);
  auto frontend = start("frontend", middle_->address());
  if (!frontend.ok()) {
    status_ = frontend.status();
    return;
  }
  frontend_ = std::move(*frontend);
}

EchoChain::~EchoChain() {
  if (frontend_) frontend_->Shutdown();
  if (middle_) middle_->Shutdown();
  if (backend_) backend_->Shutdown();
}

bool EchoChain::WaitAllIdle() const {
  for (echo::EchoServer* s : {frontend_.get(), middle_.get(), backend_.get()}) {
    if (!s->stats().WaitUntil(IsIdle, kWaitBound)) return false;
  }
  return true;
}

std::unique_ptr<::echo::v1::Echo::Stub> NewStub(
    const echo::EchoServer& server) {
  return ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel(server.address(), grpc::InsecureChannelCredentials()));
}

bool IsIdle(const echo::EchoStats::Snapshot& s) {
  return s.active_requests == 0 && s.active_workers == 0;
}

}  // namespace reqctx::testing
