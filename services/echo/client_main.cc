// echo client: calls Echo once and prints each hop.
//
//   client --target=127.0.0.1:PORT [--message=hi] [--work_ms=0]
//          [--timeout_ms=0] [--trace=00-<trace id>-<span id>-01]
//
// --timeout_ms=0 sends no deadline. --trace continues the given W3C
// traceparent; without it the call starts a fresh trace. Exits 0 if the call
// succeeded, 1 if it failed, 2 on bad flags.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "server host:port");
ABSL_FLAG(std::string, message, "hello", "message to echo");
ABSL_FLAG(int64_t, work_ms, 0, "simulated work per hop, in ms");
ABSL_FLAG(int64_t, timeout_ms, 0, "deadline for the call, in ms (0: none)");
ABSL_FLAG(std::string, trace, "",
          "W3C traceparent to continue (default: start a new trace)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "echo client: --target=host:port [--message --work_ms --timeout_ms "
      "--trace]");
  absl::ParseCommandLine(argc, argv);

  reqctx::Context ctx = reqctx::Background();
  reqctx::CancelFunc cancel;
  if (int64_t timeout_ms = absl::GetFlag(FLAGS_timeout_ms); timeout_ms > 0) {
    std::tie(ctx, cancel) =
        reqctx::WithTimeout(ctx, absl::Milliseconds(timeout_ms));
  }
  if (std::string trace = absl::GetFlag(FLAGS_trace); !trace.empty()) {
    std::optional<reqctx::TraceContext> tc = reqctx::ParseTraceparent(trace);
    if (!tc) {
      absl::FPrintF(stderr, "client: --trace is not a valid traceparent\n");
      return 2;
    }
    ctx = reqctx::WithTraceContext(ctx, *tc);
  }

  auto stub = echo::v1::Echo::NewStub(reqctx::CreateChannel(
      absl::GetFlag(FLAGS_target), grpc::InsecureChannelCredentials()));
  echo::v1::EchoRequest request;
  request.set_message(absl::GetFlag(FLAGS_message));
  request.set_work_ms(absl::GetFlag(FLAGS_work_ms));
  echo::v1::EchoResponse response;
  std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
  grpc::Status status = stub->Echo(cc.get(), request, &response);
  if (!status.ok()) {
    absl::PrintF("error: %s\n",
                 reqctx::FromGrpcStatus(status).ToString());
    return 1;
  }
  absl::PrintF("message:  %s\ntrace id: %s\n", response.message(),
               response.trace_id());
  for (int i = 0; i < response.hops_size(); ++i) {
    const echo::v1::Hop& hop = response.hops(i);
    absl::PrintF("hop %d: %-10s trace %s span %s deadline remaining %s\n", i,
                 hop.service(), hop.trace_id(), hop.span_id(),
                 hop.deadline_remaining_ms() < 0
                     ? std::string("none")
                     : absl::StrFormat("%d ms", hop.deadline_remaining_ms()));
  }
  return 0;
}
