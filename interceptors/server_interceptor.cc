#include "interceptors/server_interceptor.h"

#include <grpc/support/time.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/current.h"
#include "interceptors/internal/call_observer.h"
#include "interceptors/internal/incoming_deadline.h"
#include "interceptors/internal/server_call.h"
#include "interceptors/internal/server_call_registry.h"
#include "w3c/baggage_context.h"
#include "w3c/trace_propagation.h"

namespace reqctx {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::InterceptorBatchMethods;
using internal::ServerCall;
using internal::ServerCallRegistry;

// Inline for the usual single value: gathering the headers costs no heap
// allocation per call.
using HeaderList = absl::InlinedVector<std::string_view, 2>;

// `parent` with the baggage of the call's `baggage` headers (joined, as
// repeated headers form one list), or `parent` itself if there is none.
Context WithIncomingBaggage(const Context& parent, const HeaderList& values) {
  if (values.empty()) return parent;
  if (values.size() == 1) return WithBaggageHeader(parent, values[0]);
  std::string joined;
  for (std::string_view v : values) {
    if (!joined.empty()) joined.push_back(',');
    joined.append(v);
  }
  return WithBaggageHeader(parent, joined);
}

HeaderList HeaderValues(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
    std::string_view key) {
  HeaderList values;
  auto range = metadata.equal_range(grpc::string_ref(key.data(), key.size()));
  for (auto it = range.first; it != range.second; ++it) {
    values.emplace_back(it->second.data(), it->second.size());
  }
  return values;
}

// The time left until the call's deadline, read once from gRPC's raw
// gpr_timespec (nullopt: no deadline). Not from ServerContextBase::deadline():
// its conversion to system_clock::time_point (nanoseconds in int64, +-292
// years) overflows for a far but valid `grpc-timeout` such as "99999999H"
// (~11,400 years), and the wrapped value lies in the past, which failed such
// calls with DEADLINE_EXCEEDED at once. absl::Duration has the range. The
// difference is taken on the deadline's own clock (gRPC keeps server
// deadlines on the monotonic clock), and the Context is made with
// WithTimeout, so the deadline fires by the monotonic clock however the wall
// clock is stepped.
std::optional<absl::Duration> RemainingOf(const grpc::ServerContextBase& sc) {
  gpr_timespec raw = sc.raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) == 0) {
    return std::nullopt;
  }
  gpr_timespec left = gpr_time_sub(raw, gpr_now(raw.clock_type));
  return absl::Seconds(left.tv_sec) + absl::Nanoseconds(left.tv_nsec);
}

// Which of gRPC's three server APIs serves a call (see the header).
enum class Api {
  kCallback,  // grpc::CallbackServerContext: close pushed (POST_RECV_CLOSE).
  kSync,      // grpc::ServerContext on a gRPC sync-server thread: polled.
  kAsync,     // Any other grpc::ServerContext: the completion-queue API (or
              // a sync call on a thread gRPC did not name; see IsSyncThread).
};

// True on a thread of gRPC's synchronous server. gRPC 1.51 runs every sync
// handler on a thread of its ThreadManager, created by grpc_core::Thread with
// the name "grpcpp_sync_server" (truncated by Linux to 15 characters); an
// async call's first hook runs on the application's thread that drains its
// completion queue. Cached per thread (one prctl per thread's life).
bool IsSyncThread() {
  thread_local const bool sync = [] {
    char name[32] = {};
    if (pthread_getname_np(pthread_self(), name, sizeof(name)) != 0) {
      return false;
    }
    return std::string_view(name).substr(0, 11) == "grpcpp_sync";
  }();
  return sync;
}

Api ApiOf(grpc::ServerContextBase* sc) {
  if (dynamic_cast<grpc::CallbackServerContext*>(sc) != nullptr) {
    return Api::kCallback;
  }
  return IsSyncThread() ? Api::kSync : Api::kAsync;
}

// The call whose initial hook is dispatching on this thread: gRPC runs a
// sync handler inside the Proceed() of that hook (the handler is the
// continuation of the initial batch), an async call's Proceed() only queues
// its tag. So FromServerContext() for this call on this thread proves a sync
// handler even where IsSyncThread() could not tell.
thread_local const ServerCall* t_dispatching = nullptr;

// One per call (gRPC creates it with the call and destroys it after both the
// ServerContext and the call's close notification are gone).
class ServerCallInterceptor final : public grpc::experimental::Interceptor {
 public:
  // `rules` belongs to the factory, which outlives its server's calls.
  ServerCallInterceptor(grpc::experimental::ServerRpcInfo* info,
                        const ServerCallRules* rules)
      : sc_(info->server_context()),
        method_(info->method() != nullptr ? info->method() : ""),
        rules_(rules) {}

  ~ServerCallInterceptor() override {
    if (call() != nullptr) EndCall(grpc::CANCELLED);  // No status was sent.
  }

  void Intercept(InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_CANCEL)) {
      // Server-side TryCancel (any thread; must not block; no Proceed).
      if (std::shared_ptr<ServerCall> c = call()) c->OnCancelled();
      return;
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      std::shared_ptr<ServerCall> c = BeginCall(*methods->GetRecvInitialMetadata());
      if (api_ != Api::kCallback) {
        Dispatch(methods, *c);
        return;
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      status_sent_.store(true);
      EndCall(methods->GetSendStatus().error_code());
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_CLOSE)) {
      // Closed before the status went out means canceled (client cancel,
      // deadline or shutdown); after it, the call simply ended. Sync: seen
      // by the watcher's IsCancelled() or when the handler returns; async:
      // when the application's completion queue delivers the close (with or
      // without an AsyncNotifyWhenDone tag); callback: pushed.
      if (std::shared_ptr<ServerCall> c = call()) {
        if (status_sent_.load()) {
          c->End();
        } else {
          c->OnCancelled();
        }
      }
    }
    methods->Proceed();
  }

 private:
  // Proceeds with the initial batch of a sync or async call. A sync handler
  // runs inside this Proceed(), on this thread: Current() is the call's
  // Context exactly for that span (a scope opened and closed on this thread,
  // around the handler). An async call's Proceed() only queues its tag: no
  // scope, so nothing is left behind on the completion-queue thread.
  void Dispatch(InterceptorBatchMethods* methods, const ServerCall& call) {
    const ServerCall* outer = std::exchange(t_dispatching, &call);
    if (api_ == Api::kSync) {
      ScopedContext scope(call.context());
      methods->Proceed();
    } else {
      methods->Proceed();
    }
    t_dispatching = outer;
  }

  std::shared_ptr<ServerCall> BeginCall(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
    const int64_t arrival_ns = internal::MonoNowNs();
    grpc::ServerContextBase* sc = sc_;
    api_ = ApiOf(sc);
    std::optional<absl::Duration> remaining = RemainingOf(*sc);
    std::optional<absl::Duration> handler_remaining = remaining;
    if (rules_->deadline) {
      handler_remaining = rules_->deadline(method_, remaining);
    }
    auto [base, cancel] = handler_remaining.has_value()
                              ? WithTimeout(Background(), *handler_remaining)
                              : WithCancel(Background());
    const HeaderList traceparents =
        HeaderValues(metadata, internal::kTraceparentHeader);
    const HeaderList tracestates =
        HeaderValues(metadata, internal::kTracestateHeader);
    internal::IncomingTrace trace = internal::ContinueTraceOf(
        {traceparents.data(), traceparents.size()},
        {tracestates.data(), tracestates.size()});
    Context ctx = WithTraceContext(base, std::move(trace.trace));
    if (trace.tracestate.has_value()) {
      ctx = internal::WithTracestate(ctx, std::move(*trace.tracestate));
    }
    if (rules_->values) ctx = rules_->values(method_, ctx, metadata);
    ctx = WithIncomingBaggage(ctx, HeaderValues(metadata, kBaggageHeader));
    observer_.Start(method_, ctx, arrival_ns, remaining,
                    {traceparents.data(), traceparents.size()});
    std::optional<internal::IncomingDeadline> deadline;
    if (remaining.has_value()) deadline.emplace(*remaining);
    auto call = std::make_shared<ServerCall>(ctx, std::move(cancel),
                                             std::move(deadline));
    ServerCallRegistry::Get().Add(sc, call);
    // Sync: polled from now on (IsCancelled() is safe at any time on the
    // sync API), so Current() alone sees a cancel, FromServerContext or not.
    if (api_ == Api::kSync) call->StartWatching(sc);
    std::lock_guard<std::mutex> lock(mu_);
    call_ = call;
    return call;
  }

  // Once per call: PRE_SEND_STATUS ends it, and the destructor only if that
  // never ran (a second registry removal per call would be pure overhead).
  // `code`: the status sent (or CANCELLED if none was).
  void EndCall(int code) {
    std::shared_ptr<ServerCall> c = call();
    if (c == nullptr || ended_.exchange(true)) return;
    ServerCallRegistry::Get().Remove(sc_, c.get());
    // Before End() cancels the Context: a Context done only by the call's
    // end is not orphaned work.
    observer_.Finish(code, c->context(), c->cancel_seen_ns());
    c->End();
  }

  // Later hooks may run on other threads (gRPC orders them through its core,
  // which TSan cannot see), so the shared fields are read under mu_.
  std::shared_ptr<ServerCall> call() const {
    std::lock_guard<std::mutex> lock(mu_);
    return call_;
  }

  // Used as a registry key only: this object may outlive the ServerContext.
  grpc::ServerContextBase* const sc_;
  // Set by the first hook, before any other hook of the call can run; read
  // only by Intercept's own initial batch.
  Api api_ = Api::kAsync;
  const char* const method_;  // gRPC's (static in generated code), or "".
  // Started before call_ is published under mu_, finished by the one
  // EndCall (which reads call_ under mu_ first).
  internal::ServerCallObserver observer_;
  std::atomic<bool> status_sent_{false};
  std::atomic<bool> ended_{false};  // EndCall has run.

  const ServerCallRules* const rules_;

  mutable std::mutex mu_;
  // Set by POST_RECV_INITIAL_METADATA, the first hook of every call, before
  // the handler runs; never changed afterwards.
  std::shared_ptr<ServerCall> call_;  // Guarded by mu_.
};

class ServerInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ServerInterceptorFactory(ServerCallRules rules)
      : rules_(std::move(rules)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ServerCallInterceptor(info, &rules_);
  }

 private:
  const ServerCallRules rules_;
};

Context CanceledContext() {
  static const Context* const canceled = [] {
    auto [ctx, cancel] = WithCancel(Background());
    cancel();
    return new Context(ctx);
  }();
  return *canceled;
}

}  // namespace

void InstallServerInterceptors(grpc::ServerBuilder& builder) {
  InstallServerInterceptorsWithRules(builder, ServerCallRules());
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerInterceptorFactory() {
  return MakeServerInterceptorFactoryWithRules(ServerCallRules());
}

void InstallServerInterceptorsWithRules(grpc::ServerBuilder& builder,
                                        ServerCallRules rules) {
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      creators;
  creators.push_back(MakeServerInterceptorFactoryWithRules(std::move(rules)));
  builder.experimental().SetInterceptorCreators(std::move(creators));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerInterceptorFactoryWithRules(ServerCallRules rules) {
  return std::make_unique<ServerInterceptorFactory>(std::move(rules));
}

Context FromServerContext(const grpc::ServerContextBase* sc) {
  std::shared_ptr<ServerCall> call = ServerCallRegistry::Get().Find(sc);
  if (call == nullptr) return CanceledContext();
  // Asked from inside the call's own dispatch: a sync handler (see
  // t_dispatching). A no-op if it is already watched.
  if (t_dispatching == call.get()) call->StartWatching(sc);
  return call->context();
}

}  // namespace reqctx
