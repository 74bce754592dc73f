// Issue 23's open item (a late call judged against its budget at arrival,
// not at admission): what gRPC 1.51 C++ tells a server of when a call
// arrived. A measurement, not a regression test: DISABLED_, run it with
//   bazel test //tests:arrival_probe_test --test_output=all \
//     --test_arg=--gtest_also_run_disabled_tests
// (with --test_output=all and --test_arg=--gtest_also_run_disabled_tests).
// Plain gRPC (no reqctx code): an Echo server on 127.0.0.1 whose handlers
// spin the CPU for kWork each, on the sync, callback and async APIs, under
// kClients concurrent callers (more than the machine's cores: the server's
// threads, its completion queue and the CPU are contended). For every call
// it prints, relative to the client's send time (just before the stub call):
//   anchor   the server's deadline minus the client's own (gRPC anchors the
//            deadline when it parses grpc-timeout: this is parse - encode);
//   factory  ServerInterceptorFactoryInterface::CreateServerInterceptor;
//   hook     the interceptor's POST_RECV_INITIAL_METADATA;
//   handler  the handler's first line;
// and whether the call's client_metadata holds grpc-timeout (it would give
// the budget at arrival: deadline - grpc-timeout).
//
// Measured 2026-12-07 (session 13, plain build, the shared 2-core machine;
// ms after the send, p50 / p90 / max; "lost" = hook - anchor, the budget
// gone between gRPC's deadline anchor and the earliest hook):
//   12 callers  sync      hook 5.5 / 13.0 / 22.6    lost 3.6 / 11.1 / 20.1
//               callback  hook 1.6 / 5.0 / 10.9     lost 0.3 / 4.4 / 10.0
//               async     hook 92.7 / 113 / 113     lost 91.8 / 112 / 113
//                         (handler 112 / 113 / 114: the request's tag is
//                         queued again after the hook)
//   48 callers  sync      hook 32 / 107 / 193       lost 24 / 94 / 187
//               callback  hook 17 / 88 / 100        lost 5.7 / 85 / 96
//               async     hook 479 / 501 / 521      lost 478 / 500 / 521
//                         (handler 494 / 514 / 521)
//   48 callers, PROBE_WORK=sleep (no CPU contention):
//               sync      hook 1.6 / 10.9 / 18.9    lost 0.8 / 9.9 / 18.0
//               callback  hook 1.8 / 3.9 / 5.8      lost -0.7 / 2.1 / 4.8
//               async     hook 473 / 493 / 498      lost 472 / 492 / 497
//                         (handler 492 / 497 / 498)
//   (async: one loop thread keeps ~5 requests outstanding; the calls it has
//   not requested yet wait unmatched in gRPC, where no hook sees them.)
//   sync, 48 callers, PROBE_MIN_POLLERS=16 (gRPC's default keeps 1 idle
//   poller and starts a thread when the last one takes a call): sleep work
//   lost -1.7 / -0.7 / 2.0 (was 0.8 / 7.8 / 14.3 in the same sitting: the
//   thread starts); CPU work lost 27-33 / 125-171 / 255-280 against
//   min_pollers 1's 28-29 / 121-135 / 354-429 (two runs each, load ~3.3):
//   under CPU contention the loss is the scheduler's, not the pollers'.
//   "lost" reads up to ~2 ms low: the anchor rounds up (whole-ms deadlines).
//   anchor 0.7-6.4 ms p50, up to 45 ms max at 48 callers (the client's
//   encode to the server's parse, on a loaded machine); grpc-timeout in
//   client_metadata: 0 calls of 72 and of 288, on every API. The factory
//   and the hook fire together (same thread, < 0.1 ms apart); on the sync
//   and callback APIs the handler's first line follows the hook within
//   0.1 ms (p50).
// Budgets under 1 s: grpc-timeout then carries whole milliseconds; from 1 to
// 10 s gRPC rounds it up to 10 ms (timeout_encoding.cc), which hides the
// anchor.
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/support/server_interceptor.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "proto/echo.grpc.pb.h"
#include "tests/test_timing.h"

namespace {

using ::echo::v1::Echo;
using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;

// Callers: 12, or PROBE_CLIENTS (--test_env=PROBE_CLIENTS=48), at most 256.
int Clients() {
  const char* env = std::getenv("PROBE_CLIENTS");
  int n = 12;
  if (env != nullptr && absl::SimpleAtoi(env, &n) && n >= 1 && n <= 256) {
    return n;
  }
  return 12;
}
const int kClients = Clients();
constexpr int kCallsPerClient = 6;
const int kCalls = kClients * kCallsPerClient;
constexpr absl::Duration kWork = absl::Milliseconds(10);
// Under 1 s (see the file comment).
constexpr absl::Duration kTimeout = absl::Milliseconds(900);
constexpr char kIndexHeader[] = "probe-index";

struct Times {
  absl::Time send, client_deadline, server_deadline, factory, hook, handler;
  bool timeout_header = false;
  bool ok = false;
};

std::mutex g_mu;
std::vector<Times> g_times(kCalls);

absl::Time FromTimespec(gpr_timespec t) {
  gpr_timespec r = gpr_convert_clock_type(t, GPR_CLOCK_REALTIME);
  return absl::FromUnixSeconds(r.tv_sec) + absl::Nanoseconds(r.tv_nsec);
}

// PROBE_WORK=sleep: the handlers sleep instead of spinning (no CPU
// contention: what is left is gRPC's own structure).
const bool kSleepWork = [] {
  const char* env = std::getenv("PROBE_WORK");
  return env != nullptr && std::string_view(env) == "sleep";
}();

void Spin(absl::Duration d) {
  if (kSleepWork) {
    absl::SleepFor(d);  // Simulated work, not a wait for an event.
    return;
  }
  const absl::Time end = absl::Now() + d;
  while (absl::Now() < end) {
  }
}

int IndexOf(const std::multimap<grpc::string_ref, grpc::string_ref>& md) {
  auto it = md.find(kIndexHeader);
  int i = -1;
  if (it == md.end() ||
      !absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()),
                        &i) ||
      i < 0 || i >= kCalls) {
    return -1;
  }
  return i;
}

class ProbeInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit ProbeInterceptor(absl::Time created) : created_(created) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                POST_RECV_INITIAL_METADATA)) {
      const absl::Time now = absl::Now();
      auto* md = m->GetRecvInitialMetadata();
      const int i = IndexOf(*md);
      if (i >= 0) {
        std::lock_guard<std::mutex> lock(g_mu);
        g_times[i].factory = created_;
        g_times[i].hook = now;
        g_times[i].timeout_header = md->count("grpc-timeout") > 0;
      }
    }
    m->Proceed();
  }

 private:
  const absl::Time created_;
};

class ProbeFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo*) override {
    return new ProbeInterceptor(absl::Now());
  }
};

void Handled(const grpc::ServerContextBase& sc) {
  const absl::Time now = absl::Now();
  const int i = IndexOf(sc.client_metadata());
  if (i < 0) return;
  std::lock_guard<std::mutex> lock(g_mu);
  g_times[i].handler = now;
  g_times[i].server_deadline = FromTimespec(sc.raw_deadline());
}

class SyncEcho final : public Echo::Service {
  grpc::Status Echo(grpc::ServerContext* sc, const EchoRequest*,
                    EchoResponse*) override {
    Handled(*sc);
    Spin(kWork);
    return grpc::Status::OK;
  }
};

class CallbackEcho final : public Echo::CallbackService {
 public:
  ~CallbackEcho() override {
    for (std::thread& t : workers_) t.join();
  }
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* sc,
                                 const EchoRequest*, EchoResponse*) override {
    Handled(*sc);
    grpc::ServerUnaryReactor* r = sc->DefaultReactor();
    std::lock_guard<std::mutex> lock(mu_);
    // The work off gRPC's callback thread (as a well-behaved callback
    // service does).
    workers_.emplace_back([r] {
      Spin(kWork);
      r->Finish(grpc::Status::OK);
    });
    return r;
  }

 private:
  std::mutex mu_;
  std::vector<std::thread> workers_;
};

enum class Api { kSync, kCallback, kAsync };

// One async call: requested, then answered by the (single) CQ thread.
struct AsyncCall {
  grpc::ServerContext sc;
  EchoRequest req;
  grpc::ServerAsyncResponseWriter<EchoResponse> writer{&sc};
  bool finishing = false;
};

// What a probe run saw: calls OK, and how many of those carried
// grpc-timeout in their client_metadata.
struct ProbeResult {
  int ok = 0;
  int with_timeout = 0;
};

// Runs kCalls calls from kClients clients against `api` and prints when
// gRPC's hooks fired (ms after each client's send).
ProbeResult RunProbe(Api api, const char* name) {
  for (Times& t : g_times) t = Times();
  SyncEcho sync_service;
  CallbackEcho callback_service;
  Echo::AsyncService async_service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  std::vector<std::unique_ptr<
      grpc::experimental::ServerInterceptorFactoryInterface>>
      creators;
  creators.push_back(std::make_unique<ProbeFactory>());
  builder.experimental().SetInterceptorCreators(std::move(creators));
  std::unique_ptr<grpc::ServerCompletionQueue> cq;
  switch (api) {
    case Api::kSync:
      builder.RegisterService(&sync_service);
      // PROBE_MIN_POLLERS=n: n idle sync threads kept polling (gRPC's
      // default 1; MAX_POLLERS raised to match).
      if (const char* env = std::getenv("PROBE_MIN_POLLERS"); env != nullptr) {
        int n = 0;
        if (absl::SimpleAtoi(env, &n) && n >= 1 && n <= 256) {
          builder.SetSyncServerOption(
              grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, n);
          builder.SetSyncServerOption(
              grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
              std::max(n, 2));
        }
      }
      break;
    case Api::kCallback:
      builder.RegisterService(&callback_service);
      break;
    case Api::kAsync:
      builder.RegisterService(&async_service);
      cq = builder.AddCompletionQueue();
      break;
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  EXPECT_NE(server, nullptr);
  if (server == nullptr) return {};
  std::thread cq_thread;
  if (api == Api::kAsync) {
    // One thread serves the queue and does the work inline: a call waits in
    // the queue while the thread works on earlier ones.
    cq_thread = std::thread([&] {
      auto request = [&] {
        auto* c = new AsyncCall;
        async_service.RequestEcho(&c->sc, &c->req, &c->writer, cq.get(),
                                  cq.get(), c);
      };
      for (int i = 0; i < 4; ++i) request();
      void* tag;
      bool ok;
      while (cq->Next(&tag, &ok)) {
        auto* c = static_cast<AsyncCall*>(tag);
        if (!ok || c->finishing) {
          delete c;
          continue;
        }
        request();
        Handled(c->sc);
        Spin(kWork);
        c->finishing = true;
        c->writer.Finish(EchoResponse(), grpc::Status::OK, c);
      }
    });
  }
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                     grpc::InsecureChannelCredentials());
  auto stub = Echo::NewStub(channel);
  EXPECT_TRUE(channel->WaitForConnected(absl::ToChronoTime(absl::Now() +
                                                           absl::Seconds(5))));
  std::atomic<int> next{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      for (int k = 0; k < kCallsPerClient; ++k) {
        const int i = next.fetch_add(1);
        grpc::ClientContext ctx;
        ctx.AddMetadata(kIndexHeader, std::to_string(i));
        const absl::Time send = absl::Now();
        const absl::Time deadline = send + kTimeout;
        ctx.set_deadline(absl::ToChronoTime(deadline));
        EchoRequest req;
        EchoResponse resp;
        grpc::Status s = stub->Echo(&ctx, req, &resp);
        std::lock_guard<std::mutex> lock(g_mu);
        g_times[i].send = send;
        g_times[i].client_deadline = deadline;
        g_times[i].ok = s.ok();
      }
    });
  }
  for (std::thread& t : clients) t.join();
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
  if (cq != nullptr) {
    cq->Shutdown();
    cq_thread.join();
  }
  // Milliseconds after the client's send.
  auto ms = [](absl::Duration d) { return absl::ToDoubleMilliseconds(d); };
  std::vector<double> anchor, factory, hook, handler, lost;
  int ok = 0, with_timeout = 0;
  std::lock_guard<std::mutex> lock(g_mu);
  for (const Times& t : g_times) {
    if (!t.ok) continue;
    ++ok;
    with_timeout += t.timeout_header ? 1 : 0;
    anchor.push_back(ms(t.server_deadline - t.client_deadline));
    factory.push_back(ms(t.factory - t.send));
    hook.push_back(ms(t.hook - t.send));
    handler.push_back(ms(t.handler - t.send));
    // Budget the interceptor sees lost to the way in, past gRPC's anchor.
    lost.push_back(ms(t.hook - t.send) -
                   ms(t.server_deadline - t.client_deadline));
  }
  auto stats = [](std::vector<double> v) {
    if (v.empty()) return std::string("-");
    std::sort(v.begin(), v.end());
    return absl::StrCat("p50 ", v[v.size() / 2], "  p90 ",
                        v[v.size() * 9 / 10], "  max ", v.back());
  };
  std::printf(
      "[%s] %d of %d calls OK, %d clients, %s %s each; ms after the "
      "client's send:\n"
      "  anchor (server deadline - client deadline): %s\n"
      "  interceptor factory:                        %s\n"
      "  POST_RECV_INITIAL_METADATA hook:            %s\n"
      "  handler's first line:                       %s\n"
      "  hook minus anchor (lost before the hook):   %s\n"
      "  calls whose client_metadata has grpc-timeout: %d\n",
      name, ok, kCalls, kClients, absl::FormatDuration(kWork).c_str(),
      kSleepWork ? "sleep" : "CPU work",
      stats(anchor).c_str(), stats(factory).c_str(), stats(hook).c_str(),
      stats(handler).c_str(), stats(lost).c_str(), with_timeout);
  return {ok, with_timeout};
}

// What server_policy.cc's late-call rule rests on: gRPC 1.51 turns
// grpc-timeout into an absolute deadline when it parses it and never hands
// it to the application, so the budget a call arrived with cannot be read
// (only the deadline, less whatever gRPC's queues took). A gRPC that starts
// passing it fails here: then use it.
TEST(ArrivalProbe, GrpcTimeoutIsNotInClientMetadata) {
  if (reqctx::testing::kThreadSanitizer) {
    // A raw gRPC interceptor reads gRPC's own call objects, which Debian's
    // uninstrumented gRPC frees and reuses out of TSan's sight (a reported
    // race on a reused heap block inside gRPC, nothing of this file's).
    // What it checks is gRPC's behaviour, which the plain run covers.
    GTEST_SKIP() << "ThreadSanitizer cannot follow Debian's uninstrumented "
                    "gRPC here; the plain and ASan runs check this";
  }
  const ProbeResult r = RunProbe(Api::kCallback, "callback");
  EXPECT_GT(r.ok, 0);
  EXPECT_EQ(r.with_timeout, 0);
}

TEST(ArrivalProbe, DISABLED_Sync) {
  EXPECT_EQ(RunProbe(Api::kSync, "sync").ok, kCalls);
}
TEST(ArrivalProbe, DISABLED_Callback) {
  EXPECT_EQ(RunProbe(Api::kCallback, "callback").ok, kCalls);
}
TEST(ArrivalProbe, DISABLED_Async) {
  EXPECT_EQ(RunProbe(Api::kAsync, "async").ok, kCalls);
}

}  // namespace
