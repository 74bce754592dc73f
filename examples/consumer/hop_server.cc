// hop_server PORT_FILE: serves hop.v1.Hop on 127.0.0.1 (a free port, written
// to PORT_FILE) with reqctx's server interceptors, until SIGTERM/SIGINT or
// 120 s. Each call's reqctx::Context carries the caller's deadline and trace.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <memory>
#include <optional>

#include "context/context.h"
#include "hop.grpc.pb.h"
#include "interceptors/interceptors.h"

namespace {

class HopService final : public hop::v1::Hop::Service {
  grpc::Status Remaining(grpc::ServerContext* sc,
                         const hop::v1::RemainingRequest* request,
                         hop::v1::RemainingReply* reply) override {
    reqctx::Context ctx = reqctx::FromServerContext(sc);
    std::optional<absl::Time> deadline = ctx.Deadline();
    reply->set_deadline_remaining_ms(
        deadline ? absl::ToInt64Milliseconds(*deadline - absl::Now()) : -1);
    if (auto tc = reqctx::GetTraceContext(ctx)) reply->set_trace_id(tc->trace_id.str());
    // Work that the caller's deadline or cancel cuts short.
    absl::Status s =
        reqctx::SleepFor(ctx, absl::Milliseconds(request->work_ms()));
    return reqctx::ToGrpcStatus(s);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: hop_server PORT_FILE\n");
    return 2;
  }
  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  HopService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  reqctx::InstallServerInterceptors(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "hop_server: cannot listen on 127.0.0.1\n");
    return 1;
  }
  std::ofstream(argv[1]) << port << "\n";
  std::printf("hop_server: listening on 127.0.0.1:%d\n", port);
  std::fflush(stdout);

  timespec limit = {120, 0};  // Never outlive a forgotten CI step.
  sigtimedwait(&stop, nullptr, &limit);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  return 0;
}
