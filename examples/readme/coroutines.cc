// docs/async.md "Coroutines": a handler that fans out gRPC calls
// as a group, and a worker that sleeps and waits on a Context.
#include <cstdio>
#include <utility>
#include <vector>

#include "async/call.h"   // reqctx::Call (//async:grpc_call)
#include "async/coro.h"   // Task, Loop, RunSync, Sleep, Done, WhenAll (//async:coro)
#include "context/context.h"
#include "proto/echo.grpc.pb.h"

using echo::v1::Echo;

// Three calls bound to one child Context: canceling `group` (or destroying
// this task) cancels every call still in flight.
reqctx::Task<int> FanOut(reqctx::Context ctx, std::unique_ptr<Echo::Stub>* stub) {
  auto [group, cancel_group] = reqctx::WithCancel(ctx);
  std::vector<reqctx::Task<absl::StatusOr<echo::v1::EchoResponse>>> calls;
  for (const char* m : {"a", "b", "c"}) {
    echo::v1::EchoRequest request;
    request.set_message(m);
    calls.push_back(reqctx::Call(group, *stub, &Echo::Stub::async::Echo, request));
  }
  auto results = co_await reqctx::WhenAll(std::move(calls));
  int ok = 0;
  for (const auto& r : results) ok += r.ok();
  co_return ok;
}

// Sleeps are cut short when ctx is done; Done waits for it (with a bound).
reqctx::Task<bool> Worker(reqctx::Context ctx) {
  absl::Status slept = co_await reqctx::Sleep(ctx, absl::Seconds(10));
  bool done = co_await reqctx::Done(ctx, absl::Seconds(1));
  co_return done && slept.code() == absl::StatusCode::kDeadlineExceeded;
}

int main() {
  auto [ctx, cancel] =
      reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(50));
  bool ok = reqctx::RunSync(Worker(ctx));  // Runs a Loop on this thread.
  std::printf("worker stopped by the deadline: %s\n", ok ? "yes" : "no");
  return ok ? 0 : 1;
}
