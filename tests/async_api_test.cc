// The completion-queue (async) API, alone and mixed with sync handlers on one
// server: an async call's Context has the deadline and the trace, is canceled
// by a client cancel (with or without an AsyncNotifyWhenDone tag), by its
// deadline, by server shutdown and when the call ends; no Current() scope is
// ever installed on the completion-queue thread, and the sync cancel watcher
// never touches an async call (polling IsCancelled() there is unsafe before
// the AsyncNotifyWhenDone tag, and without one crashes in gRPC 1.51).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "context/current.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"

namespace reqctx {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using ::echo::v1::StatsRequest;
using ::echo::v1::StatsResponse;
using testing::kPromptBound;
using testing::kWaitBound;

constexpr char kTraceId[] = "4bf92f3577b34da6a3ce929d0e0e4736";

// A completion-queue event handler; deleted after it runs.
struct Tag {
  std::function<void(bool ok)> fn;
};
void* NewTag(std::function<void(bool ok)> fn) { return new Tag{std::move(fn)}; }

// What a handler saw of its call's Context.
struct Seen {
  std::string kind;  // "unary", "stream" or "sync".
  Context ctx;
  std::optional<TraceContext> trace;
  std::optional<absl::Time> deadline;
  // Current() on the thread that got the call had no trace: no scope was
  // left there (sync: Current() is the call's Context instead).
  bool current_was_background = false;
  bool current_is_call = false;
  std::optional<absl::Status> done_err;  // Set once the Context was done.
  absl::Time done_at;
};

// Echo and EchoStream on the async API, Stats on the sync API, one server.
// Async handlers hand the Context to a worker thread that waits for it to
// be done (bounded) and then finishes the call with its error; a request
// whose message is "finish" is answered at once instead. The sync Stats
// handler waits on Current() only.
class MixedService final
    : public ::echo::v1::Echo::WithAsyncMethod_Echo<
          ::echo::v1::Echo::WithAsyncMethod_EchoStream<
              ::echo::v1::Echo::Service>> {
 public:
  explicit MixedService(bool notify_when_done) : notify_(notify_when_done) {}

  grpc::Status Stats(grpc::ServerContext*, const StatsRequest*,
                     StatsResponse*) override {
    Context current = Current();
    size_t i = Record("sync", current);
    bool done = current.Done().WaitFor(kWaitBound);
    if (done) MarkDone(i, current);
    return grpc::Status(grpc::StatusCode::CANCELLED, "done");
  }

  void Start(grpc::ServerCompletionQueue* cq) {
    cq_ = cq;
    RequestUnary();
    RequestStream();
    cq_thread_ = std::thread([this] {
      void* tag = nullptr;
      bool ok = false;
      while (cq_->Next(&tag, &ok)) {
        auto* t = static_cast<Tag*>(tag);
        {
          std::lock_guard<std::mutex> lock(ops_mu_);
          t->fn(ok);
          delete t;
        }
        // Nothing of any call may remain as this thread's Current().
        if (GetTraceContext(Current()).has_value()) scope_leaked_ = true;
      }
    });
  }

  // After server Shutdown: let the workers finish, then drain the queue.
  void Stop() {
    for (;;) {
      std::thread t;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (workers_.empty()) break;
        t = std::move(workers_.back());
        workers_.pop_back();
      }
      t.join();
    }
    cq_->Shutdown();
    cq_thread_.join();
  }

  // Waits (bounded) until `n` handlers have started; returns what they saw.
  std::vector<Seen> WaitStarted(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    changed_.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound),
                      [&] { return seen_.size() >= n; });
    return seen_;
  }
  // Waits (bounded) until handler `i`'s Context is done.
  std::optional<Seen> WaitDone(size_t i) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!changed_.wait_for(lock, absl::ToChronoNanoseconds(kWaitBound), [&] {
          return i < seen_.size() && seen_[i].done_err.has_value();
        })) {
      return std::nullopt;
    }
    return seen_[i];
  }
  bool scope_leaked() const { return scope_leaked_; }

 private:
  struct UnaryCall {
    grpc::ServerContext sc;
    EchoRequest request;
    grpc::ServerAsyncResponseWriter<EchoResponse> responder{&sc};
    void* notify_tag = nullptr;
  };
  struct StreamCall {
    grpc::ServerContext sc;
    EchoRequest request;
    grpc::ServerAsyncWriter<EchoResponse> writer{&sc};
    void* notify_tag = nullptr;
  };

  size_t Record(const std::string& kind, const Context& ctx) {
    Seen s;
    s.kind = kind;
    s.ctx = ctx;
    s.trace = GetTraceContext(ctx);
    s.deadline = ctx.Deadline();
    std::optional<TraceContext> current = GetTraceContext(Current());
    s.current_was_background = !current.has_value();
    s.current_is_call = current && s.trace && current->span_id == s.trace->span_id;
    std::lock_guard<std::mutex> lock(mu_);
    seen_.push_back(std::move(s));
    changed_.notify_all();
    return seen_.size() - 1;
  }
  void MarkDone(size_t i, const Context& ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    seen_[i].done_err = ctx.Err();
    seen_[i].done_at = absl::Now();
    changed_.notify_all();
  }
  // Runs `finish` on a worker once `ctx` is done (bounded wait).
  void WhenDone(size_t i, Context ctx, std::function<void()> finish) {
    std::lock_guard<std::mutex> lock(mu_);
    workers_.emplace_back([this, i, ctx, finish = std::move(finish)] {
      if (ctx.Done().WaitFor(kWaitBound)) MarkDone(i, ctx);
      std::lock_guard<std::mutex> lock(ops_mu_);
      finish();
    });
  }

  // Every tag of a call holds it (shared_ptr): it is freed with the last
  // one, whichever order gRPC delivers them in. The AsyncNotifyWhenDone tag
  // is only delivered for a call that started (gRPC 1.51), so a request that
  // fails at shutdown frees it itself.
  template <typename Call>
  void MaybeNotify(const std::shared_ptr<Call>& call) {
    if (!notify_) return;
    call->notify_tag = NewTag([call](bool) {});
    call->sc.AsyncNotifyWhenDone(call->notify_tag);
  }
  template <typename Call>
  static void DropUnstarted(const std::shared_ptr<Call>& call) {
    delete static_cast<Tag*>(call->notify_tag);
  }

  void RequestUnary() {
    auto call = std::make_shared<UnaryCall>();
    MaybeNotify(call);
    RequestEcho(&call->sc, &call->request, &call->responder, cq_, cq_,
                NewTag([this, call](bool ok) {
                  if (!ok) return DropUnstarted(call);  // Shutdown.
                  RequestUnary();
                  Context ctx = FromServerContext(&call->sc);
                  size_t i = Record("unary", ctx);
                  if (call->request.message() == "finish") {
                    EchoResponse response;
                    response.set_message(call->request.message());
                    call->responder.Finish(response, grpc::Status::OK,
                                           NewTag([call](bool) {}));
                    return;
                  }
                  WhenDone(i, ctx, [call, ctx] {
                    call->responder.Finish(EchoResponse(),
                                           ToGrpcStatus(ctx.Err()),
                                           NewTag([call](bool) {}));
                  });
                }));
  }

  void RequestStream() {
    auto call = std::make_shared<StreamCall>();
    MaybeNotify(call);
    RequestEchoStream(
        &call->sc, &call->request, &call->writer, cq_, cq_,
        NewTag([this, call](bool ok) {
          if (!ok) return DropUnstarted(call);
          RequestStream();
          Context ctx = FromServerContext(&call->sc);
          size_t i = Record("stream", ctx);
          EchoResponse first;
          first.set_message(call->request.message() + " #1");
          // Write one message; once it is out, wait for the Context.
          call->writer.Write(first, NewTag([this, call, ctx, i](bool) {
            WhenDone(i, ctx, [call, ctx] {
              call->writer.Finish(ToGrpcStatus(ctx.Err()),
                                  NewTag([call](bool) {}));
            });
          }));
        }));
  }

  const bool notify_;
  grpc::ServerCompletionQueue* cq_ = nullptr;
  std::thread cq_thread_;
  std::atomic<bool> scope_leaked_{false};
  // Held around every operation on a call and every tag's handler. gRPC
  // hands a call's state from the thread that starts an operation to the
  // one that gets its tag through its (uninstrumented) core, which
  // ThreadSanitizer cannot see; the lock makes that order visible.
  std::mutex ops_mu_;

  std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Seen> seen_;            // Guarded by mu_.
  std::vector<std::thread> workers_;  // Guarded by mu_.
};

// A server with the mixed service, reqctx's interceptor and one completion
// queue; param: whether the async calls ask for AsyncNotifyWhenDone.
class AsyncApiTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(&service_);
    InstallServerInterceptors(builder);
    cq_ = builder.AddCompletionQueue();
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    service_.Start(cq_.get());
    stub_ = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_ == nullptr) return;
    ShutdownServer();
    service_.Stop();
    EXPECT_FALSE(service_.scope_leaked());
    EXPECT_TRUE(testing::Eventually(
        [] { return debug::LiveServerCallCount() == 0 &&
                    debug::WatchedServerCallCount() == 0; }));
  }
  void ShutdownServer() {
    std::call_once(shutdown_once_, [this] {
      server_->Shutdown(std::chrono::system_clock::now());
    });
  }

  static Context Traced(const Context& parent) {
    return WithTraceContext(parent, {kTraceId, "00f067aa0ba902b7", true});
  }
  static EchoRequest Request(const std::string& message) {
    EchoRequest r;
    r.set_message(message);
    return r;
  }

  MixedService service_{GetParam()};
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
  std::once_flag shutdown_once_;
};

TEST_P(AsyncApiTest, UnaryContextHasDeadlineAndTraceAndEndsWithTheCall) {
  auto [ctx, cancel] = WithTimeout(Traced(Background()), absl::Seconds(30));
  auto cc = NewClientContext(ctx);
  EchoResponse response;
  grpc::Status s = stub_->Echo(cc.get(), Request("finish"), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.message(), "finish");
  std::vector<Seen> seen = service_.WaitStarted(1);
  ASSERT_EQ(seen.size(), 1u);
  ASSERT_TRUE(seen[0].trace.has_value());
  EXPECT_EQ(seen[0].trace->trace_id, kTraceId);
  EXPECT_NE(seen[0].trace->span_id, "00f067aa0ba902b7");
  ASSERT_TRUE(seen[0].deadline.has_value());
  EXPECT_LE(*seen[0].deadline, *ctx.Deadline() + absl::Milliseconds(200));
  EXPECT_GT(*seen[0].deadline, absl::Now() + absl::Seconds(20));
  EXPECT_TRUE(seen[0].current_was_background);
  // The status went out after the call's Context was released.
  EXPECT_EQ(seen[0].ctx.Err().code(), absl::StatusCode::kCancelled);
}

TEST_P(AsyncApiTest, ClientCancelReachesUnaryAndStreamContexts) {
  auto [ctx, cancel] = WithCancel(Traced(Background()));
  grpc::Status unary_status;
  std::thread unary([&, ctx = ctx] {
    auto cc = NewClientContext(ctx);
    EchoResponse response;
    unary_status = stub_->Echo(cc.get(), Request("wait"), &response);
  });
  auto stream_cc = NewClientContext(ctx);
  auto reader = stub_->EchoStream(stream_cc.get(), Request("tick"));
  EchoResponse first;
  ASSERT_TRUE(reader->Read(&first));
  EXPECT_EQ(first.message(), "tick #1");
  std::vector<Seen> seen = service_.WaitStarted(2);
  ASSERT_EQ(seen.size(), 2u);
  for (const Seen& s : seen) {
    EXPECT_TRUE(s.ctx.Err().ok()) << s.kind << ": done before the cancel";
    EXPECT_TRUE(s.current_was_background) << s.kind;
  }
  // Only async calls are in flight: the sync watcher polls none of them.
  EXPECT_EQ(debug::WatchedServerCallCount(), 0u);
  const absl::Time canceled_at = absl::Now();
  cancel();
  for (size_t i = 0; i < 2; ++i) {
    std::optional<Seen> done = service_.WaitDone(i);
    ASSERT_TRUE(done.has_value()) << seen[i].kind << ": never done";
    EXPECT_EQ(done->done_err->code(), absl::StatusCode::kCancelled)
        << done->kind;
    EXPECT_LT(done->done_at - canceled_at, kPromptBound) << done->kind;
  }
  unary.join();
  EXPECT_EQ(unary_status.error_code(), grpc::StatusCode::CANCELLED);
  while (reader->Read(&first)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_P(AsyncApiTest, DeadlineEndsAsyncContextWithDeadlineExceeded) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(300));
  auto cc = NewClientContext(ctx);
  EchoResponse response;
  grpc::Status s = stub_->Echo(cc.get(), Request("wait"), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  std::optional<Seen> done = service_.WaitDone(0);
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->done_err->code(), absl::StatusCode::kDeadlineExceeded);
}

// Sync and async calls in flight on one server at once: each is canceled on
// its own, the sync handler through Current() alone, and no scope appears on
// the completion-queue thread.
TEST_P(AsyncApiTest, MixedSyncAndAsyncCallsOnOneServer) {
  auto [sync_ctx, cancel_sync] = WithCancel(Traced(Background()));
  auto [async_ctx, cancel_async] = WithCancel(Background());
  grpc::Status sync_status, async_status;
  std::thread sync_caller([&, c = sync_ctx] {
    auto cc = NewClientContext(c);
    StatsResponse r;
    sync_status = stub_->Stats(cc.get(), StatsRequest(), &r);
  });
  std::thread async_caller([&, c = async_ctx] {
    auto cc = NewClientContext(c);
    EchoResponse r;
    async_status = stub_->Echo(cc.get(), Request("wait"), &r);
  });
  std::vector<Seen> seen = service_.WaitStarted(2);
  ASSERT_EQ(seen.size(), 2u);
  const size_t sync_i = seen[0].kind == "sync" ? 0 : 1;
  const size_t async_i = 1 - sync_i;
  ASSERT_EQ(seen[sync_i].kind, "sync");
  ASSERT_EQ(seen[async_i].kind, "unary");
  // The sync handler's Current() is its call's Context (with the trace).
  ASSERT_TRUE(seen[sync_i].trace.has_value());
  EXPECT_EQ(seen[sync_i].trace->trace_id, kTraceId);
  EXPECT_TRUE(seen[async_i].current_was_background);

  absl::Time canceled_at = absl::Now();
  cancel_sync();
  std::optional<Seen> sync_done = service_.WaitDone(sync_i);
  ASSERT_TRUE(sync_done.has_value());
  EXPECT_EQ(sync_done->done_err->code(), absl::StatusCode::kCancelled);
  EXPECT_LT(sync_done->done_at - canceled_at, kPromptBound);
  sync_caller.join();
  EXPECT_EQ(sync_status.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(seen[async_i].ctx.Err().ok()) << "the async call is still live";

  canceled_at = absl::Now();
  cancel_async();
  std::optional<Seen> async_done = service_.WaitDone(async_i);
  ASSERT_TRUE(async_done.has_value());
  EXPECT_EQ(async_done->done_err->code(), absl::StatusCode::kCancelled);
  EXPECT_LT(async_done->done_at - canceled_at, kPromptBound);
  async_caller.join();
  EXPECT_EQ(async_status.error_code(), grpc::StatusCode::CANCELLED);
}

TEST_P(AsyncApiTest, ServerShutdownCancelsSyncAndAsyncContexts) {
  std::vector<std::thread> callers;
  for (int i = 0; i < 3; ++i) {
    callers.emplace_back([this, i] {
      auto cc = NewClientContext(Background());
      if (i == 0) {
        StatsResponse r;
        stub_->Stats(cc.get(), StatsRequest(), &r);
      } else if (i == 1) {
        EchoResponse r;
        stub_->Echo(cc.get(), Request("wait"), &r);
      } else {
        auto reader = stub_->EchoStream(cc.get(), Request("tick"));
        EchoResponse r;
        while (reader->Read(&r)) {
        }
        reader->Finish();
      }
    });
  }
  ASSERT_EQ(service_.WaitStarted(3).size(), 3u);
  ShutdownServer();
  for (size_t i = 0; i < 3; ++i) {
    std::optional<Seen> done = service_.WaitDone(i);
    ASSERT_TRUE(done.has_value()) << i;
    EXPECT_EQ(done->done_err->code(), absl::StatusCode::kCancelled)
        << done->kind;
  }
  for (std::thread& t : callers) t.join();
}

INSTANTIATE_TEST_SUITE_P(NotifyWhenDone, AsyncApiTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "WithAsyncNotifyWhenDone"
                                             : "WithoutAsyncNotifyWhenDone";
                         });

}  // namespace
}  // namespace reqctx
