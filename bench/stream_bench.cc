// stream_bench: what binding a stream to a Context costs per message
// (issue 22). Prints measurements; asserts nothing (the behaviour is tested
// in tests/streams_test.cc).
//
//   1. The guard alone: N x (ReadStarted, ReadDone, WriteStarted, WriteDone)
//      on a StreamGuard bound to a live call context, without and with a
//      message-wait and an idle timeout: ns per message and the timer
//      operations (arms and re-arms of the guard's one lazy timer) for the
//      whole stream.
//   2. A real stream: a server-streaming call over 127.0.0.1 (sync API,
//      reqctx's interceptors on both sides) sending N messages, raw gRPC
//      streams against bound ones (ServerStream / ClientStream) without and
//      with timeouts: ns per message end to end, and the timer operations of
//      both guards.
//
//   bazel run -c opt //bench:stream_bench -- --messages=100000
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "interceptors/interceptors.h"
#include "streams/stream_guard.h"
#include "streams/sync.h"
#include "tests/stream_test.grpc.pb.h"

ABSL_FLAG(int, messages, 100'000, "messages per stream");

namespace {

using reqctx::streams::StreamGuard;
using reqctx::streams::StreamOptions;
using reqctx::streamtest::Msg;
using reqctx::streamtest::StreamTest;

StreamOptions Timed() {
  StreamOptions o;
  o.message_wait = absl::Seconds(1);
  o.idle = absl::Seconds(1);
  return o;
}

// 1. The guard alone (client side, bound to a ClientContext never started:
// nothing is cancelled unless a timeout fires, and none does).
void GuardAlone(const char* label, const StreamOptions& options, int n) {
  grpc::ClientContext cc;
  StreamGuard guard(reqctx::Background(), &cc, options);
  const absl::Time start = absl::Now();
  for (int i = 0; i < n; ++i) {
    guard.ReadStarted();
    (void)guard.ReadDone(true);
    guard.WriteStarted();
    (void)guard.WriteDone(true);
  }
  const absl::Duration took = absl::Now() - start;
  const reqctx::streams::StreamStats st = guard.stats();
  guard.End();
  absl::PrintF("guard alone %-22s %8d msgs  %6.1f ns/msg (read+write)  "
               "timer ops %llu\n",
               label, n, absl::ToDoubleNanoseconds(took) / n,
               static_cast<unsigned long long>(st.timer_ops));
}

// 2. A server-streaming call. Metadata "x-bound": "0" raw, "1" bound
// without timeouts, "2" bound with both.
class Service : public StreamTest::Service {
 public:
  grpc::Status Down(grpc::ServerContext* sc, const Msg* req,
                    grpc::ServerWriter<Msg>* w) override {
    auto it = sc->client_metadata().find("x-bound");
    const char mode =
        it == sc->client_metadata().end() ? '0' : it->second.data()[0];
    Msg m;
    m.set_payload("0123456789abcdef");
    if (mode == '0') {
      for (int i = 0; i < req->count(); ++i) {
        if (!w->Write(m)) break;
      }
      return grpc::Status::OK;
    }
    reqctx::streams::ServerStream stream(
        sc, w, mode == '2' ? Timed() : StreamOptions{});
    for (int i = 0; i < req->count(); ++i) {
      if (!stream.Write(m)) break;
    }
    server_timer_ops_ = stream.guard().stats().timer_ops;
    return stream.Finish(grpc::Status::OK);
  }
  uint64_t server_timer_ops_ = 0;  // Read after the call (one at a time).
};

void RealStream(const char* label, char mode, StreamTest::Stub* stub,
                Service* service, int n) {
  Msg req;
  req.set_count(n);
  Msg m;
  int got = 0;
  uint64_t client_ops = 0;
  const absl::Time start = absl::Now();
  grpc::Status s;
  if (mode == '0') {
    grpc::ClientContext cc;
    cc.AddMetadata("x-bound", "0");
    auto reader = stub->Down(&cc, req);
    while (reader->Read(&m)) ++got;
    s = reader->Finish();
  } else {
    reqctx::streams::ClientStream stream(
        reqctx::Background(), mode == '2' ? Timed() : StreamOptions{},
        [&](grpc::ClientContext* cc) {
          cc->AddMetadata("x-bound", std::string(1, mode));
          return stub->Down(cc, req);
        });
    while (stream.Read(&m)) ++got;
    client_ops = stream.guard().stats().timer_ops;
    s = stream.Finish();
  }
  const absl::Duration took = absl::Now() - start;
  absl::PrintF("real stream %-22s %8d msgs  %6.0f ns/msg  status %d  "
               "timer ops: client %llu, server %llu\n",
               label, got, absl::ToDoubleNanoseconds(took) / n,
               static_cast<int>(s.error_code()),
               static_cast<unsigned long long>(client_ops),
               static_cast<unsigned long long>(
                   mode == '0' ? 0 : service->server_timer_ops_));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_messages);

  GuardAlone("no timeouts", StreamOptions{}, n);
  GuardAlone("message_wait+idle 1s", Timed(), n);

  Service service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  reqctx::InstallServerInterceptors(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto stub = StreamTest::NewStub(reqctx::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  RealStream("warm-up (raw)", '0', stub.get(), &service, n / 10);
  for (int round = 0; round < 2; ++round) {
    RealStream("raw gRPC", '0', stub.get(), &service, n);
    RealStream("bound, no timeouts", '1', stub.get(), &service, n);
    RealStream("bound, wait+idle 1s", '2', stub.get(), &service, n);
  }
  server->Shutdown(std::chrono::system_clock::now());
  return 0;
}
