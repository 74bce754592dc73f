// docs/grpc.md "A relay, whole": a client calls a relay, which calls a
// backend. The deadline shrinks hop by hop, one trace id spans the chain, and
// the client's deadline stops the backend's work. Compiled and run by CI.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "context/context.h"
#include "interceptors/interceptors.h"  // build dep: //interceptors
#include "proto/echo.grpc.pb.h"

using echo::v1::Echo;
using echo::v1::EchoRequest;
using echo::v1::EchoResponse;

class Hop final : public Echo::Service {
 public:
  Hop(const char* name, std::unique_ptr<Echo::Stub> next) : name_(name), next_(std::move(next)) {}

  grpc::Status Echo(grpc::ServerContext* sc, const EchoRequest* req, EchoResponse* resp) override {
    reqctx::Context ctx = reqctx::FromServerContext(sc);  // deadline, cancel, trace
    echo::v1::Hop* hop = resp->add_hops();
    hop->set_service(name_);
    if (auto trace = reqctx::GetTraceContext(ctx)) hop->set_trace_id(trace->trace_id.str());
    std::optional<absl::Duration> left = ctx.TimeLeft();  // nullopt: no deadline
    hop->set_deadline_remaining_ms(left ? absl::ToInt64Milliseconds(*left) : -1);
    if (next_ == nullptr) {  // the backend: work that the deadline cuts short
      return reqctx::ToGrpcStatus(reqctx::SleepFor(ctx, absl::Milliseconds(req->work_ms())));
    }
    EchoResponse downstream;
    std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
    grpc::Status s = next_->Echo(cc.get(), *req, &downstream);
    resp->mutable_hops()->MergeFrom(downstream.hops());
    return s;
  }

 private:
  const char* name_;
  std::unique_ptr<Echo::Stub> next_;
};

// Starts `service` on a free loopback port with reqctx's interceptors.
std::unique_ptr<grpc::Server> Serve(Hop* service, int* port) {
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), port);
  builder.RegisterService(service);
  reqctx::InstallServerInterceptors(builder);
  return builder.BuildAndStart();
}

std::unique_ptr<Echo::Stub> StubFor(int port) {
  return Echo::NewStub(reqctx::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
}

int main() {
  int backend_port = 0, relay_port = 0;
  Hop backend("backend", nullptr);
  std::unique_ptr<grpc::Server> backend_server = Serve(&backend, &backend_port);
  Hop relay("relay", StubFor(backend_port));
  std::unique_ptr<grpc::Server> relay_server = Serve(&relay, &relay_port);
  std::unique_ptr<Echo::Stub> client = StubFor(relay_port);

  // A request with a 1 s budget: both hops see it shrink.
  auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), absl::Seconds(1));
  EchoRequest req;
  EchoResponse resp;
  grpc::Status ok = client->Echo(reqctx::NewClientContext(ctx).get(), req, &resp);
  for (const echo::v1::Hop& h : resp.hops()) {
    std::printf("%-7s trace %s, %lld ms left\n", h.service().c_str(), h.trace_id().c_str(),
                static_cast<long long>(h.deadline_remaining_ms()));
  }
  bool shrank = resp.hops_size() == 2 && resp.hops(0).deadline_remaining_ms() <= 1000 &&
                resp.hops(1).deadline_remaining_ms() < resp.hops(0).deadline_remaining_ms() &&
                resp.hops(1).trace_id() == resp.hops(0).trace_id();

  // 10 s of work under a 200 ms budget: the backend stops at the deadline.
  auto [short_ctx, cancel_short] = reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(200));
  req.set_work_ms(10'000);
  EchoResponse late_resp;
  absl::Time start = absl::Now();
  grpc::Status late = client->Echo(reqctx::NewClientContext(short_ctx).get(), req, &late_resp);
  std::printf("10 s of work, 200 ms budget: %s after %lld ms\n", late.error_message().c_str(),
              static_cast<long long>(absl::ToInt64Milliseconds(absl::Now() - start)));

  relay_server->Shutdown();
  backend_server->Shutdown();
  return ok.ok() && late.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && shrank ? 0 : 1;
}
