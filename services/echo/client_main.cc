// echo client: calls Echo once (or a streaming method) and prints each hop.
//
//   client --target=127.0.0.1:PORT [--message=hi] [--work_ms=0]
//          [--timeout_ms=0] [--trace=00-<trace id>-<span id>-01]
//          [--method=echo|stream|collect|chat] [--count=3]
//          [--pause_ms=0]
//
// --timeout_ms=0 sends no deadline. --trace continues the given W3C
// traceparent; without it the call starts a fresh trace. --method=stream
// reads --count EchoStream responses, then cancels; collect sends --count
// requests ("MESSAGE 1", ...) and prints the one answer; chat sends them one
// by one, printing each answer. --pause_ms waits that long before each
// streamed request after the first (to see a server's
// --stream_message_wait_ms cut a slow client). Exits 0 if the call
// succeeded, 1 if it failed, 2 on bad flags.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "interceptors/interceptors.h"
#include "ledger/grpc_ledger.h"
#include "proto/echo.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "server host:port");
ABSL_FLAG(std::string, message, "hello", "message to echo");
ABSL_FLAG(int64_t, work_ms, 0, "simulated work per hop, in ms");
ABSL_FLAG(int64_t, timeout_ms, 0, "deadline for the call, in ms (0: none)");
ABSL_FLAG(std::string, trace, "",
          "W3C traceparent to continue (default: start a new trace)");
ABSL_FLAG(std::string, method, "echo",
          "echo, stream (EchoStream), collect (Collect) or chat (Chat)");
ABSL_FLAG(int, count, 3, "streamed messages to send or read");
ABSL_FLAG(bool, ledger, false,
          "ask every hop for its budget ledger (request header "
          "reqctx-ledger: always) and print it for a successful echo too");
ABSL_FLAG(int64_t, pause_ms, 0,
          "pause before each streamed request after the first, in ms");

namespace {

void PrintHops(const echo::v1::EchoResponse& response) {
  for (int i = 0; i < response.hops_size(); ++i) {
    const echo::v1::Hop& hop = response.hops(i);
    absl::PrintF("hop %d: %-10s trace %s span %s deadline remaining %s%s\n", i,
                 hop.service(), hop.trace_id(), hop.span_id(),
                 hop.deadline_remaining_ms() < 0
                     ? std::string("none")
                     : absl::StrFormat("%d ms", hop.deadline_remaining_ms()),
                 hop.messages_received() > 0
                     ? absl::StrFormat(", %d messages received",
                                       hop.messages_received())
                     : std::string());
  }
}

int Failed(const grpc::Status& status) {
  absl::PrintF("error: %s\n", reqctx::FromGrpcStatus(status).ToString());
  // Where the deadline went, when the hops returned their ledger.
  if (std::string line = reqctx::LedgerLineOf(status); !line.empty()) {
    absl::PrintF("ledger:   %s\n", line);
  }
  return 1;
}

// The n-th streamed request (1-based), after --pause_ms if n > 1.
echo::v1::EchoRequest StreamedRequest(int n) {
  if (n > 1 && absl::GetFlag(FLAGS_pause_ms) > 0) {
    absl::SleepFor(absl::Milliseconds(absl::GetFlag(FLAGS_pause_ms)));
  }
  echo::v1::EchoRequest request;
  request.set_message(absl::StrCat(absl::GetFlag(FLAGS_message), " ", n));
  request.set_work_ms(absl::GetFlag(FLAGS_work_ms));
  return request;
}

int Stream(echo::v1::Echo::Stub& stub, const reqctx::Context& ctx) {
  auto [call, cancel] = reqctx::WithCancel(ctx);
  std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(call);
  echo::v1::EchoRequest request = StreamedRequest(1);
  request.set_message(absl::GetFlag(FLAGS_message));
  auto reader = stub.EchoStream(cc.get(), request);
  echo::v1::EchoResponse response;
  int n = 0;
  while (n < absl::GetFlag(FLAGS_count) && reader->Read(&response)) {
    absl::PrintF("message:  %s\n", response.message());
    ++n;
  }
  cancel();
  while (reader->Read(&response)) {
  }
  grpc::Status status = reader->Finish();
  if (n < absl::GetFlag(FLAGS_count)) return Failed(status);
  PrintHops(response);
  return 0;
}

int Collect(echo::v1::Echo::Stub& stub, const reqctx::Context& ctx) {
  std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
  echo::v1::EchoResponse response;
  auto writer = stub.Collect(cc.get(), &response);
  for (int n = 1; n <= absl::GetFlag(FLAGS_count); ++n) {
    if (!writer->Write(StreamedRequest(n))) break;
  }
  writer->WritesDone();
  grpc::Status status = writer->Finish();
  if (!status.ok()) return Failed(status);
  absl::PrintF("message:  %s\ntrace id: %s\n", response.message(),
               response.trace_id());
  PrintHops(response);
  return 0;
}

int Chat(echo::v1::Echo::Stub& stub, const reqctx::Context& ctx) {
  std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
  auto stream = stub.Chat(cc.get());
  echo::v1::EchoResponse response;
  for (int n = 1; n <= absl::GetFlag(FLAGS_count); ++n) {
    if (!stream->Write(StreamedRequest(n)) || !stream->Read(&response)) break;
    absl::PrintF("message:  %s (through %d hops)\n", response.message(),
                 response.hops_size());
  }
  stream->WritesDone();
  while (stream->Read(&response)) {
  }
  grpc::Status status = stream->Finish();
  if (!status.ok()) return Failed(status);
  PrintHops(response);
  return 0;
}

}  // namespace

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
  const std::string method = absl::GetFlag(FLAGS_method);
  if (method == "stream") return Stream(*stub, ctx);
  if (method == "collect") return Collect(*stub, ctx);
  if (method == "chat") return Chat(*stub, ctx);
  if (method != "echo") {
    absl::FPrintF(stderr,
                  "client: --method must be echo, stream, collect or chat\n");
    return 2;
  }
  echo::v1::EchoRequest request;
  request.set_message(absl::GetFlag(FLAGS_message));
  request.set_work_ms(absl::GetFlag(FLAGS_work_ms));
  echo::v1::EchoResponse response;
  std::unique_ptr<grpc::ClientContext> cc = reqctx::NewClientContext(ctx);
  if (absl::GetFlag(FLAGS_ledger)) cc->AddMetadata("reqctx-ledger", "always");
  grpc::Status status = stub->Echo(cc.get(), request, &response);
  if (!status.ok()) return Failed(status);
  absl::PrintF("message:  %s\ntrace id: %s\n", response.message(),
               response.trace_id());
  PrintHops(response);
  if (absl::GetFlag(FLAGS_ledger)) {
    if (absl::StatusOr<reqctx::Ledger> l = reqctx::LedgerFromTrailers(*cc);
        l.ok()) {
      absl::PrintF("ledger:   %s\n", reqctx::LedgerLine(*l));
    }
  }
  return 0;
}
