#include "tests/policy_test_server.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/sleep.h"
#include "interceptors/interceptors.h"

namespace reqctx::testing {

grpc::Status SleepWork(int, const Context& ctx,
                       const ::echo::v1::EchoRequest& request) {
  absl::Status s = SleepFor(ctx, absl::Milliseconds(request.work_ms()));
  return ToGrpcStatus(s);
}

class PolicyTestServer::SyncImpl final : public ::echo::v1::Echo::Service {
 public:
  explicit SyncImpl(PolicyTestServer* owner) : owner_(owner) {}
  grpc::Status Echo(grpc::ServerContext* sc,
                    const ::echo::v1::EchoRequest* request,
                    ::echo::v1::EchoResponse* response) override {
    response->set_message(request->message());
    return owner_->Handle(sc, *request);
  }

 private:
  PolicyTestServer* const owner_;
};

class PolicyTestServer::CallbackImpl final
    : public ::echo::v1::Echo::CallbackService {
 public:
  explicit CallbackImpl(PolicyTestServer* owner) : owner_(owner) {}
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* sc,
                                 const ::echo::v1::EchoRequest* request,
                                 ::echo::v1::EchoResponse* response) override {
    grpc::ServerUnaryReactor* reactor = sc->DefaultReactor();
    response->set_message(request->message());
    // The behavior may block: run it off the callback thread.
    ::echo::v1::EchoRequest copy = *request;
    std::thread([this, sc, reactor, copy] {
      reactor->Finish(owner_->Handle(sc, copy));
    }).detach();
    return reactor;
  }

 private:
  PolicyTestServer* const owner_;
};

// One async Echo call; its address is every completion-queue tag of the
// call. `mu` orders the loop's reads and the final delete after the worker
// thread's writes (the completion queue's own ordering is invisible to
// TSan: gRPC is not instrumented).
struct PolicyTestServer::AsyncCall {
  enum class Stage { kRequested, kAdmitting, kWorking, kFinishing };
  std::mutex mu;
  Stage stage = Stage::kRequested;  // Guarded by mu.
  grpc::ServerContext ctx;
  ::echo::v1::EchoRequest request;
  grpc::ServerAsyncResponseWriter<::echo::v1::EchoResponse> responder{&ctx};
  policy::AsyncAdmission admission;
};

PolicyTestServer::PolicyTestServer(Api api, Behavior behavior,
                                   policy::ServerPolicy* policy)
    : behavior_(std::move(behavior)), policy_(policy) {
  Start(api, nullptr);
}

PolicyTestServer::PolicyTestServer(Api api, Behavior behavior,
                                   ServerCallRules rules)
    : behavior_(std::move(behavior)),
      policy_(nullptr),
      shutdown_(rules.shutdown) {
  Start(api, &rules);
}

void PolicyTestServer::Start(Api api, const ServerCallRules* rules) {
  policy::ServerPolicy* const policy = policy_;
  if (api == Api::kSync) {
    service_ = std::make_unique<SyncImpl>(this);
  } else if (api == Api::kCallback) {
    service_ = std::make_unique<CallbackImpl>(this);
  } else {
    auto service = std::make_unique<::echo::v1::Echo::AsyncService>();
    async_service_ = service.get();
    service_ = std::move(service);
  }
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port_);
  if (policy != nullptr) {
    if (!policy->Apply(service_.get()).ok()) return;
  }
  builder.RegisterService(service_.get());
  if (policy != nullptr) {
    policy->InstallInterceptors(builder);
  } else if (rules != nullptr) {
    InstallServerInterceptorsWithRules(builder, *rules);
  } else {
    InstallServerInterceptors(builder);
  }
  if (async_service_ != nullptr) cq_ = builder.AddCompletionQueue();
  server_ = builder.BuildAndStart();
  if (port_ == 0) server_.reset();
  if (server_ != nullptr && cq_ != nullptr) {
    AsyncRequestNext();
    loop_ = std::thread([this] { AsyncLoop(); });
  }
}

void PolicyTestServer::AsyncRequestNext() {
  auto* c = new AsyncCall;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++live_async_calls_;
  }
  async_service_->RequestEcho(&c->ctx, &c->request, &c->responder, cq_.get(),
                              cq_.get(), c);
}

void PolicyTestServer::AsyncLoop() {
  void* tag;
  bool ok;
  // Ends when the queue is shut down and drained.
  while (cq_->Next(&tag, &ok)) AsyncEvent(static_cast<AsyncCall*>(tag), ok);
}

void PolicyTestServer::AsyncEvent(AsyncCall* c, bool ok) {
  std::unique_lock<std::mutex> call_lock(c->mu);
  switch (c->stage) {
    case AsyncCall::Stage::kRequested:
      if (!ok) break;  // The server is stopping: no call.
      AsyncRequestNext();
      c->stage = AsyncCall::Stage::kAdmitting;
      if (std::function<void()> f = [this] {
            std::lock_guard<std::mutex> lock(mu_);
            return std::exchange(before_admit_, nullptr);
          }()) {
        f();
      }
      if (policy_ != nullptr) {
        policy_->AdmitAsync("/echo.v1.Echo/Echo", &c->ctx, cq_.get(), c,
                            &c->admission);
        return;
      }
      [[fallthrough]];  // No policy: every call is admitted.
    case AsyncCall::Stage::kAdmitting:
      if (policy_ != nullptr && !c->admission.admitted()) {
        c->stage = AsyncCall::Stage::kFinishing;
        c->responder.FinishWithError(c->admission.Refusal(&c->ctx), c);
        return;
      }
      c->stage = AsyncCall::Stage::kWorking;
      // The behavior may block: run it off the loop thread.
      std::thread([this, c, request = c->request] {
        grpc::Status status = Handle(&c->ctx, request);
        std::lock_guard<std::mutex> lock(c->mu);
        c->admission.Done();
        c->stage = AsyncCall::Stage::kFinishing;
        ::echo::v1::EchoResponse response;
        response.set_message(request.message());
        c->responder.Finish(response, status, c);
      }).detach();
      return;
    case AsyncCall::Stage::kWorking:  // Not a tag of ours.
      return;
    case AsyncCall::Stage::kFinishing:
      break;  // Finished (or failed to): the call is over.
  }
  call_lock.unlock();
  delete c;
  std::lock_guard<std::mutex> lock(mu_);
  --live_async_calls_;
  cv_.notify_all();
}

void PolicyTestServer::BeforeNextAsyncAdmit(std::function<void()> f) {
  std::lock_guard<std::mutex> lock(mu_);
  before_admit_ = std::move(f);
}

PolicyTestServer::~PolicyTestServer() { Shutdown(); }

void PolicyTestServer::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    if (server_ == nullptr) return;
    if (shutdown_ != nullptr) {
      drain::ShutdownServer(*server_, *shutdown_, absl::Now());
    } else {
      server_->Shutdown(std::chrono::system_clock::now());
    }
    server_->Wait();
    // Callback and async handlers run on detached threads: wait for them,
    // and for every async call to be over (queued ones are decided when the
    // shutdown ends their Context), before the queue goes.
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::seconds(20), [this] {
        return finished_ == started_ && live_async_calls_ == 0;
      });
    }
    if (cq_ != nullptr) {
      cq_->Shutdown();
      loop_.join();
    }
  });
}

std::string PolicyTestServer::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

std::unique_ptr<::echo::v1::Echo::Stub> PolicyTestServer::NewStub() const {
  return ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel(address(), grpc::InsecureChannelCredentials()));
}

grpc::Status PolicyTestServer::Handle(grpc::ServerContextBase* sc,
                                      const ::echo::v1::EchoRequest& request) {
  Context ctx = FromServerContext(sc);
  Arrival a;
  a.at = absl::Now();
  if (std::optional<absl::Time> d = ctx.Deadline()) a.remaining = *d - a.at;
  a.criticality = policy::CriticalityOf(ctx);
  if (std::optional<TraceContext> tc = GetTraceContext(ctx)) {
    a.trace_id = tc->trace_id;
  }
  const auto& md = sc->client_metadata();
  if (auto it = md.find("traceparent"); it != md.end()) {
    std::optional<TraceContext> caller = ParseTraceparent(
        std::string_view(it->second.data(), it->second.size()));
    if (caller.has_value()) a.span_id = caller->span_id;
  }
  if (auto it = md.find("baggage"); it != md.end()) {
    a.baggage.assign(it->second.data(), it->second.size());
  }
  int index;
  {
    std::lock_guard<std::mutex> lock(mu_);
    index = started_++;
    a.index = index;
    arrivals_.push_back(a);
    // Counted before the waiters wake: WaitHandled(n) implies handled() >= n.
    ++handled_;
    cv_.notify_all();
  }
  grpc::Status s = behavior_(index, ctx, request);
  std::lock_guard<std::mutex> lock(mu_);
  ++finished_;
  cv_.notify_all();
  return s;
}

std::vector<Arrival> PolicyTestServer::arrivals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arrivals_;
}

int PolicyTestServer::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

bool PolicyTestServer::WaitFinished(int n, absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                      [&] { return finished_ >= n; });
}

bool PolicyTestServer::WaitHandled(int n, absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                      [&] { return started_ >= n; });
}

CallResult CallEcho(::echo::v1::Echo::Stub& stub, absl::Duration timeout,
                    int64_t work_ms, const std::string& baggage) {
  if (baggage.empty()) return CallEchoWithHeaders(stub, timeout, work_ms, {});
  return CallEchoWithHeaders(stub, timeout, work_ms, {baggage});
}

CallResult CallEchoWithHeaders(::echo::v1::Echo::Stub& stub,
                               absl::Duration timeout, int64_t work_ms,
                               const std::vector<std::string>& baggage) {
  grpc::ClientContext cc;
  if (timeout != absl::InfiniteDuration()) {
    cc.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
  for (const std::string& b : baggage) cc.AddMetadata("baggage", b);
  ::echo::v1::EchoRequest request;
  request.set_work_ms(work_ms);
  ::echo::v1::EchoResponse response;
  const absl::Time start = absl::Now();
  CallResult r;
  r.status = stub.Echo(&cc, request, &response);
  r.elapsed = absl::Now() - start;
  const auto& trailers = cc.GetServerTrailingMetadata();
  if (auto it = trailers.find("grpc-retry-pushback-ms"); it != trailers.end()) {
    r.pushback.assign(it->second.data(), it->second.size());
  }
  return r;
}

BackgroundCall::BackgroundCall(::echo::v1::Echo::Stub& stub,
                               absl::Duration timeout, int64_t work_ms,
                               const std::string& baggage)
    : thread_([this, &stub, timeout, work_ms, baggage] {
        result_ = CallEcho(stub, timeout, work_ms, baggage);
      }) {}

BackgroundCall::~BackgroundCall() {
  if (thread_.joinable()) thread_.join();
}

CallResult BackgroundCall::Join() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

PolicedServer::PolicedServer(PolicyTestServer::Api api,
                             policy::ServerPolicyOptions options,
                             Behavior behavior)
    : policy(std::move(options)),
      server(api, std::move(behavior), &policy),
      stub(server.NewStub()) {}

policy::ServerPolicyOptions OneSlot(int max_queue, absl::Duration expected) {
  policy::ServerPolicyOptions o;
  o.defaults.max_concurrency = 1;
  o.defaults.max_queue = max_queue;
  o.defaults.expected_handling = expected;
  o.defaults.lifo_after = absl::Hours(1);
  return o;
}

bool PollUntil(const std::function<bool()>& done, absl::Duration bound) {
  const absl::Time end = absl::Now() + bound;
  while (!done()) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

std::string ApiName(
    const ::testing::TestParamInfo<PolicyTestServer::Api>& info) {
  switch (info.param) {
    case PolicyTestServer::Api::kSync:
      return "Sync";
    case PolicyTestServer::Api::kCallback:
      return "Callback";
    case PolicyTestServer::Api::kAsync:
      break;
  }
  return "Async";
}

}  // namespace reqctx::testing
