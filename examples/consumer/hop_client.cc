// hop_client HOST:PORT: calls hop_server with reqctx Contexts and checks that
// their deadline and trace reach it: a blocking call with a 2 s deadline,
// then a coroutine call (reqctx::Call) whose 200 ms deadline ends the
// server's 10 s of work. Exit status 0 when both behave.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>

#include "async/call.h"
#include "async/coro.h"
#include "context/context.h"
#include "hop.grpc.pb.h"
#include "interceptors/interceptors.h"

namespace {

using hop::v1::Hop;

reqctx::Task<absl::StatusOr<hop::v1::RemainingReply>> SlowCall(
    reqctx::Context ctx, std::unique_ptr<Hop::Stub>* stub) {
  hop::v1::RemainingRequest request;
  request.set_work_ms(10000);
  co_return co_await reqctx::Call(ctx, *stub, &Hop::Stub::async::Remaining,
                                  request);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: hop_client HOST:PORT\n");
    return 2;
  }
  auto stub = Hop::NewStub(
      reqctx::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
  int failures = 0;

  // 1. A blocking call: the server sees our deadline (sent as grpc-timeout,
  // rounded up by at most 10 ms below 10 s) and a W3C trace id.
  auto [ctx, cancel] =
      reqctx::WithTimeout(reqctx::Background(), absl::Seconds(2));
  std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
  hop::v1::RemainingRequest request;
  hop::v1::RemainingReply reply;
  grpc::Status s = stub->Remaining(cc.get(), request, &reply);
  bool ok = s.ok() && reply.deadline_remaining_ms() > 0 &&
            reply.deadline_remaining_ms() <= 2010 && reply.trace_id().size() == 32;
  std::printf("blocking call: %s, server saw %lld ms left, trace %s\n",
              ok ? "ok" : "FAILED",
              static_cast<long long>(reply.deadline_remaining_ms()),
              reply.trace_id().c_str());
  failures += !ok;

  // 2. A coroutine call: our 200 ms deadline ends the server's 10 s of work.
  auto [short_ctx, cancel_short] =
      reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(200));
  absl::Time start = absl::Now();
  absl::StatusOr<hop::v1::RemainingReply> r =
      reqctx::RunSync(SlowCall(short_ctx, &stub));
  absl::Duration took = absl::Now() - start;
  ok = r.status().code() == absl::StatusCode::kDeadlineExceeded &&
       took < absl::Seconds(5);
  std::printf("coroutine call: %s, %s after %lld ms\n", ok ? "ok" : "FAILED",
              r.status().ToString().c_str(),
              static_cast<long long>(absl::ToInt64Milliseconds(took)));
  failures += !ok;
  return failures == 0 ? 0 : 1;
}
