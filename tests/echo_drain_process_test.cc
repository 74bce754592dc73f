// The echo server binary's drain on SIGTERM (issue 24), as a load balancer
// and a client see it: grpc.health.v1.Health turns NOT_SERVING at once,
// calls are still served for --drain_ms, then refused with UNAVAILABLE; an
// in-flight call that ends within --shutdown_grace_ms gets OK, one that does
// not is canceled with the cause "server shutting down" (UNAVAILABLE for
// its client, and the next hop's handler sees its Context end); a client
// calling all along never hangs and gets only OK or UNAVAILABLE; the
// process exits 0. And its log lines (spdlog) carry the call's fields.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"
#include "tests/server_process.h"
#include "tests/test_timing.h"
#include "w3c/trace_context.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using testing::Eventually;
using testing::kWaitBound;
using testing::PlainOrSanitized;
using testing::ServerProcess;

// grpc.health.v1 HealthCheckResponse.ServingStatus values.
constexpr int kServing = 1;
constexpr int kNotServing = 2;

// grpc.health.v1.Health/Check for `service` over `channel`: the serving
// status, or the call's error. The messages are encoded by hand (one string
// field out, one enum field back), so the test needs no health proto.
absl::StatusOr<int> HealthCheck(grpc::Channel* channel,
                                const std::string& service) {
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);  // Field 1, length-delimited.
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  grpc::GenericStub stub(channel->shared_from_this());
  grpc::ClientContext cc;
  cc.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareUnaryCall(&cc, "/grpc.health.v1.Health/Check", out,
                                    &cq);
  call->StartCall();
  grpc::ByteBuffer in;
  grpc::Status status;
  call->Finish(&in, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok)) return absl::InternalError("queue shut down");
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) return FromGrpcStatus(status);
  std::vector<grpc::Slice> slices;
  if (!in.Dump(&slices).ok()) return absl::InternalError("bad response");
  std::string bytes;
  for (const grpc::Slice& s : slices) {
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  if (bytes.empty()) return 0;  // UNKNOWN (the default is not sent).
  if (bytes.size() != 2 || bytes[0] != 0x08) {
    return absl::InternalError("unexpected health response");
  }
  return static_cast<int>(bytes[1]);
}

// A fresh trace for a call, so the next hop can tell calls apart.
TraceContext NewTrace(char fill) {
  return {std::string(31, fill) + "1", std::string(15, fill) + "1", true};
}

// One call through `stub` with `trace`, `work_ms` and `timeout`.
grpc::Status Call(::echo::v1::Echo::Stub& stub, const TraceContext& trace,
                  int64_t work_ms, absl::Duration timeout) {
  auto [ctx, cancel] =
      WithTimeout(WithTraceContext(Background(), trace), timeout);
  auto cc = NewClientContext(ctx);
  EchoRequest request;
  request.set_message("drain");
  request.set_work_ms(work_ms);
  EchoResponse response;
  return stub.Echo(cc.get(), request, &response);
}

// The next hop, in this process: its before_work hook holds the calls of
// the "long" and "medium" traces (see the test) and records how they ended.
struct NextHop {
  TraceContext long_trace = NewTrace('a');
  TraceContext medium_trace = NewTrace('b');

  std::mutex mu;
  std::condition_variable cv;
  bool long_arrived = false;      // Under mu.
  bool medium_arrived = false;    // Under mu.
  bool release_medium = false;    // Under mu.
  bool long_ended = false;        // Under mu.
  absl::Status long_err;          // Under mu.

  void BeforeWork(const Context& ctx) {
    std::optional<TraceContext> tc = GetTraceContext(ctx);
    if (!tc.has_value()) return;
    std::unique_lock<std::mutex> lock(mu);
    if (tc->trace_id == long_trace.trace_id) {
      long_arrived = true;
      cv.notify_all();
      lock.unlock();
      // Held until its Context ends (that is the point), bounded anyway.
      ctx.Done().WaitFor(absl::Minutes(2));
      lock.lock();
      long_ended = ctx.IsDone();
      long_err = ctx.Err();
      cv.notify_all();
    } else if (tc->trace_id == medium_trace.trace_id) {
      medium_arrived = true;
      cv.notify_all();
      cv.wait_for(lock, std::chrono::minutes(2),
                  [&] { return release_medium || ctx.IsDone(); });
    }
  }

  // Waits (bounded) for `flag`.
  bool Wait(bool NextHop::*flag) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound * 3),
                       [&] { return this->*flag; });
  }
};

// The time stamped on the first line of `output` (the server binary's
// spdlog lines: "[2026-12-06 18:36:19.651] ...", local time) that contains
// `text`.
std::optional<absl::Time> LoggedAt(const std::string& output,
                                   const std::string& text) {
  const size_t at = output.find(text);
  if (at == std::string::npos) return std::nullopt;
  const size_t newline = output.rfind('\n', at);
  const size_t line = newline == std::string::npos ? 0 : newline + 1;
  if (output.compare(line, 1, "[") != 0) return std::nullopt;
  const size_t close = output.find(']', line);
  if (close == std::string::npos || close > at) return std::nullopt;
  absl::Time t;
  std::string error;
  if (!absl::ParseTime("%Y-%m-%d %H:%M:%E3S",
                       output.substr(line + 1, close - line - 1),
                       absl::LocalTimeZone(), &t, &error)) {
    return std::nullopt;
  }
  return t;
}

TEST(EchoDrainProcessTest, SigtermDrainsAsALoadBalancerAndClientsExpect) {
  const absl::Duration drain = PlainOrSanitized(absl::Seconds(2),
                                                absl::Seconds(4));
  const absl::Duration grace = PlainOrSanitized(absl::Seconds(4),
                                                absl::Seconds(8));
  NextHop next;
  echo::EchoServerOptions next_options;
  next_options.name = "next";
  next_options.before_work = [&next](const Context& ctx) {
    next.BeforeWork(ctx);
  };
  absl::StatusOr<std::unique_ptr<echo::EchoServer>> next_server =
      echo::EchoServer::Start(next_options);
  ASSERT_TRUE(next_server.ok()) << next_server.status();

  ServerProcess front;
  ASSERT_TRUE(front.Start(
      {absl::StrCat("--next=", (*next_server)->address()),
       absl::StrCat("--drain_ms=", absl::ToInt64Milliseconds(drain)),
       absl::StrCat("--shutdown_grace_ms=", absl::ToInt64Milliseconds(grace))},
      /*with_stderr=*/true))
      << front.output();
  auto channel = reqctx::CreateChannel(front.address(),
                                       grpc::InsecureChannelCredentials());
  auto stub = ::echo::v1::Echo::NewStub(channel);
  // gRPC's health service is a callback-API service; under TSan, the
  // server binary (which has no gRPC suppressions: tests/
  // tsan_grpc_suppressions.cc is linked into tests only) reports gRPC core
  // handing the call's interceptor batch to another thread (invisible to
  // TSan: Debian's gRPC is not instrumented) and halts. So the health RPCs
  // are checked in the plain and ASan builds only.
  const bool check_health = !testing::kThreadSanitizer;
  for (const char* service : {"", "echo.v1.Echo"}) {
    if (!check_health) break;
    absl::StatusOr<int> health = HealthCheck(channel.get(), service);
    EXPECT_EQ(health.value_or(-1), kServing)
        << service << ": " << health.status() << "\n" << front.output();
  }
  ASSERT_TRUE(front.Running()) << front.output();

  // A call that outlives the grace, and one that ends within it, both held
  // at the next hop before the signal.
  grpc::Status long_status;
  absl::Time long_done;
  std::thread long_call([&] {
    long_status = Call(*stub, next.long_trace, 1, absl::Minutes(2));
    long_done = absl::Now();
  });
  grpc::Status medium_status;
  std::thread medium_call([&] {
    medium_status = Call(*stub, next.medium_trace, 1, absl::Minutes(2));
  });
  ASSERT_TRUE(next.Wait(&NextHop::long_arrived));
  ASSERT_TRUE(next.Wait(&NextHop::medium_arrived));

  // A client calling all along, each call bounded by its deadline.
  struct Outcome {
    absl::Time start;
    absl::Time end;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Outcome> outcomes;  // The caller's until joined.
  std::atomic<bool> stop{false};
  std::atomic<int> unavailable{0};
  std::atomic<int> calls_done{0};
  const absl::Duration call_timeout = kWaitBound;
  std::thread caller([&] {
    for (int i = 0; i < 100000 && !stop.load(); ++i) {
      const absl::Time start = absl::Now();
      grpc::Status s = Call(*stub, NewTrace('c'), 20, call_timeout);
      outcomes.push_back({start, absl::Now(), s.error_code(),
                          s.error_message()});
      calls_done.fetch_add(1);
      if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
        unavailable.fetch_add(1);
        absl::SleepFor(absl::Milliseconds(5));  // Pacing, not waiting.
      }
    }
  });

  ASSERT_TRUE(Eventually([&] { return calls_done.load() >= 3; }));
  ASSERT_EQ(unavailable.load(), 0);
  const absl::Time signaled = absl::Now();
  ASSERT_TRUE(front.Signal(SIGTERM));
  // Health flips at once (well before the drain period is over).
  EXPECT_TRUE(!check_health || Eventually(
      [&] {
        return HealthCheck(channel.get(), "").value_or(-1) == kNotServing &&
               HealthCheck(channel.get(), "echo.v1.Echo").value_or(-1) ==
                   kNotServing;
      },
      drain / 2));
  // New calls are refused once the drain period is over.
  ASSERT_TRUE(Eventually([&] { return unavailable.load() > 0; },
                         drain + kWaitBound));
  const absl::Duration refused_after = absl::Now() - signaled;
  EXPECT_GE(refused_after, drain - absl::Milliseconds(100));
  // The medium call may now end, within the grace: it gets OK.
  {
    std::lock_guard<std::mutex> lock(next.mu);
    next.release_medium = true;
    next.cv.notify_all();
  }
  medium_call.join();
  EXPECT_TRUE(medium_status.ok())
      << medium_status.error_code() << " " << medium_status.error_message();

  // The long call is canceled when the grace is over, with the cause.
  long_call.join();
  EXPECT_EQ(long_status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(long_status.error_message(), "server shutting down");
  EXPECT_GE(long_done - signaled, drain + grace - absl::Milliseconds(100));
  EXPECT_LT(long_done - signaled, drain + grace + kWaitBound);
  // ... and the next hop's handler saw its Context end.
  ASSERT_TRUE(next.Wait(&NextHop::long_ended));
  {
    std::lock_guard<std::mutex> lock(next.mu);
    EXPECT_EQ(next.long_err.code(), absl::StatusCode::kCancelled)
        << next.long_err;
  }

  const int wait_status = front.WaitExit(kWaitBound);
  stop.store(true);
  caller.join();
  ASSERT_NE(wait_status, -1) << front.output();
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0)
      << front.output();

  // Every call of the client got OK or UNAVAILABLE (retryable): none hung
  // (DEADLINE_EXCEEDED) and none was lost as CANCELLED or UNKNOWN; some
  // started after the signal were still served. One exception, gRPC's and
  // not the drain's: at the end of the drain period the server calls gRPC's
  // own Server::Shutdown (GOAWAY: new calls UNAVAILABLE), and a call that
  // reached the transport in the instant it began is killed by gRPC 1.51
  // core with a bare CANCELLED "CANCELLED" (seen once in ~800-1,200 calls).
  // Such a call was in flight at that instant, which the server's log line
  // "refusing new calls" stamps (spdlog, local time, ms).
  const std::optional<absl::Time> refusing_at =
      LoggedAt(front.output(), "refusing new calls;");
  ASSERT_TRUE(refusing_at.has_value()) << front.output();
  // (The stamp and this process's clock agree: it is the drain's end.)
  EXPECT_GE(*refusing_at - signaled, drain - absl::Milliseconds(100));
  EXPECT_LT(*refusing_at - signaled, drain + kWaitBound);
  constexpr absl::Duration kStampSlack = absl::Milliseconds(2);
  int ok_after_signal = 0, canceled_by_grpc_shutdown = 0;
  for (const Outcome& o : outcomes) {
    if (o.code == grpc::StatusCode::CANCELLED && o.message == "CANCELLED" &&
        o.start <= *refusing_at + kStampSlack &&
        o.end >= *refusing_at - kStampSlack) {
      ++canceled_by_grpc_shutdown;
      continue;
    }
    EXPECT_TRUE(o.code == grpc::StatusCode::OK ||
                o.code == grpc::StatusCode::UNAVAILABLE)
        << o.code << " " << o.message << ", ended "
        << absl::FormatDuration(o.end - signaled) << " after the signal";
    if (o.code == grpc::StatusCode::OK && o.start > signaled) {
      ++ok_after_signal;
    }
  }
  EXPECT_GT(ok_after_signal, 0);
  std::printf(
      "drain %s, grace %s: new calls refused %s after SIGTERM, long call "
      "ended %s after it; client: %zu calls, %d OK after the signal, %d "
      "UNAVAILABLE, %d canceled by gRPC's Shutdown as it began (%s after the "
      "signal)\n",
      absl::FormatDuration(drain).c_str(), absl::FormatDuration(grace).c_str(),
      absl::FormatDuration(refused_after).c_str(),
      absl::FormatDuration(long_done - signaled).c_str(), outcomes.size(),
      ok_after_signal, unavailable.load(), canceled_by_grpc_shutdown,
      absl::FormatDuration(*refusing_at - signaled).c_str());
  EXPECT_LE(canceled_by_grpc_shutdown, 2);
  // The drain is logged (through spdlog, outside any call).
  EXPECT_NE(front.output().find("trace_id=- span_id=- method=- "
                                "budget_ms=none subprocess: draining"),
            std::string::npos)
      << front.output();
  EXPECT_NE(front.output().find("canceled 1 call(s): server shutting down"),
            std::string::npos)
      << front.output();
}

// A streaming call still running when the grace is over ends like a unary
// one: UNAVAILABLE "server shutting down" (retryable), not a bare CANCELLED,
// and its relay to the next hop ends too; the process exits 0 in time.
TEST(EchoDrainProcessTest, StreamsInFlightEndWithTheShutdownCause) {
  const absl::Duration drain = PlainOrSanitized(absl::Milliseconds(300),
                                                absl::Seconds(1));
  const absl::Duration grace = PlainOrSanitized(absl::Milliseconds(500),
                                                absl::Seconds(2));
  echo::EchoServerOptions next_options;
  next_options.name = "next";
  absl::StatusOr<std::unique_ptr<echo::EchoServer>> next_server =
      echo::EchoServer::Start(next_options);
  ASSERT_TRUE(next_server.ok()) << next_server.status();
  ServerProcess front;
  ASSERT_TRUE(front.Start(
      {absl::StrCat("--next=", (*next_server)->address()),
       absl::StrCat("--drain_ms=", absl::ToInt64Milliseconds(drain)),
       absl::StrCat("--shutdown_grace_ms=", absl::ToInt64Milliseconds(grace))},
      /*with_stderr=*/true))
      << front.output();
  auto stub = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
      front.address(), grpc::InsecureChannelCredentials()));
  // EchoStream (relayed to the next hop, one message each 20 ms) and Chat
  // (the client keeps it open without sending), both running at the signal.
  auto [ctx, cancel] = WithTimeout(Background(), absl::Minutes(2));
  auto stream_cc = NewClientContext(ctx);
  EchoRequest request;
  request.set_message("s");
  request.set_work_ms(20);
  auto reader = stub->EchoStream(stream_cc.get(), request);
  EchoResponse response;
  ASSERT_TRUE(reader->Read(&response));
  auto chat_cc = NewClientContext(ctx);
  auto chat = stub->Chat(chat_cc.get());
  request.set_work_ms(0);
  ASSERT_TRUE(chat->Write(request));
  ASSERT_TRUE(chat->Read(&response));

  const absl::Time signaled = absl::Now();
  ASSERT_TRUE(front.Signal(SIGTERM));
  int read = 0;
  while (read < 1000000 && reader->Read(&response)) ++read;
  const grpc::Status stream_status = reader->Finish();
  const absl::Duration stream_ended = absl::Now() - signaled;
  while (chat->Read(&response)) {
  }
  const grpc::Status chat_status = chat->Finish();
  const int wait_status = front.WaitExit(kWaitBound);
  ASSERT_NE(wait_status, -1) << front.output();
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0)
      << front.output();
  // Each stream ends UNAVAILABLE (retryable), and its message is the cause
  // unless gRPC 1.51 closes the connection first: once the server has sent
  // its GOAWAY, the transport closes as soon as its last call ends, and the
  // client may lose the last status (most likely a reset: a client frame
  // still unread at the close), seeing UNAVAILABLE "Socket closed" instead:
  // about one run in three here. Not the process exiting first: waiting for
  // the server's connections to close before exit changed nothing. The log says
  // both streams got the cause, and the next hop's relay ended with it.
  for (const grpc::Status* status : {&stream_status, &chat_status}) {
    EXPECT_EQ(status->error_code(), grpc::StatusCode::UNAVAILABLE)
        << status->error_message() << "\n" << front.output();
    EXPECT_TRUE(status->error_message() == "server shutting down" ||
                status->error_message() == "Socket closed")
        << status->error_message() << "\n" << front.output();
  }
  EXPECT_NE(front.output().find("canceled 2 call(s): server shutting down"),
            std::string::npos)
      << front.output();
  EXPECT_GE(stream_ended, drain + grace - absl::Milliseconds(100));
  EXPECT_LT(stream_ended, drain + grace + kWaitBound);
  // The relay's call to the next hop ended with it.
  EXPECT_TRUE(Eventually(
      [&] { return (*next_server)->stats().Get().active_requests == 0; }))
      << "next hop still has "
      << (*next_server)->stats().Get().active_requests
      << " call(s)";
}

// The server's log lines written inside a call carry that call's fields: a
// database failure's details (--postgres to a port nothing listens on).
TEST(EchoServerLogProcessTest, LinesInACallCarryItsTraceMethodAndBudget) {
  ServerProcess server;
  ASSERT_TRUE(server.Start({"--postgres=host=127.0.0.1 port=1 "
                            "connect_timeout=5"},
                           /*with_stderr=*/true))
      << server.output();
  auto stub = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
      server.address(), grpc::InsecureChannelCredentials()));
  const TraceContext trace = NewTrace('d');
  grpc::Status s = Call(*stub, trace, 10, absl::Seconds(60));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
      << s.error_message();
  ASSERT_TRUE(server.WaitForOutput("subprocess: database:", kWaitBound))
      << server.output();
  const std::string& out = server.output();
  const size_t at = out.find("subprocess: database:");
  const size_t begin = out.rfind('\n', at) + 1;
  const std::string line = out.substr(begin, at - begin);
  EXPECT_NE(line.find(absl::StrCat("trace_id=", trace.trace_id.str(), " span_id=")),
            std::string::npos)
      << line;
  EXPECT_NE(line.find(" method=/echo.v1.Echo/Echo budget_ms="),
            std::string::npos)
      << line;
  EXPECT_NE(line.find("[warning]"), std::string::npos) << line;
  EXPECT_EQ(server.Terminate() >= 0, true);
}

}  // namespace
}  // namespace reqctx
