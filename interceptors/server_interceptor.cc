#include "interceptors/server_interceptor.h"

#include <grpc/support/time.h>

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
#include "interceptors/internal/server_call.h"
#include "interceptors/internal/server_call_registry.h"
#include "interceptors/internal/trace_propagation.h"
#include "w3c/baggage_context.h"

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

// The call's deadline, from gRPC's raw gpr_timespec. Not from
// ServerContextBase::deadline(): its conversion to system_clock::time_point
// (nanoseconds in int64, +-292 years) overflows for a far but valid
// `grpc-timeout` such as "99999999H" (~11,400 years), and the wrapped value
// lies in the past, which failed such calls with DEADLINE_EXCEEDED at once.
// absl::Time has the range (and saturates beyond it).
std::optional<absl::Time> DeadlineOf(const grpc::ServerContextBase& sc) {
  gpr_timespec raw = sc.raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) == 0) {
    return std::nullopt;
  }
  gpr_timespec real = gpr_convert_clock_type(raw, GPR_CLOCK_REALTIME);
  return absl::FromUnixSeconds(real.tv_sec) + absl::Nanoseconds(real.tv_nsec);
}

// One per call (gRPC creates it with the call and destroys it after both the
// ServerContext and the call's close notification are gone).
class ServerCallInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ServerCallInterceptor(grpc::experimental::ServerRpcInfo* info)
      : sc_(info->server_context()), method_(info->method()) {}

  ~ServerCallInterceptor() override {
    if (call() == nullptr) return;
    EndCall(grpc::CANCELLED);  // No status was sent.
    if (current_scope_ != nullptr && !OnScopeThread()) {
      // Never expected: a ScopedContext must die on its own thread, so
      // abandon it rather than corrupt this thread's Current().
      static_cast<void>(current_scope_.release());
    }
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
      BeginCall(*methods->GetRecvInitialMetadata());
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      status_sent_.store(true);
      EndCall(methods->GetSendStatus().error_code());
      // Sync API: this runs on the handler's thread, after the handler.
      if (OnScopeThread()) current_scope_.reset();
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_CLOSE)) {
      // Closed before the status went out means canceled (client cancel,
      // deadline or shutdown); after it, the call simply ended.
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
  void BeginCall(
      const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
    const int64_t arrival_ns = internal::MonoNowNs();
    grpc::ServerContextBase* sc = sc_;
    std::optional<absl::Time> deadline = DeadlineOf(*sc);
    auto [base, cancel] = deadline.has_value()
                              ? WithDeadline(Background(), *deadline)
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
    ctx = WithIncomingBaggage(ctx, HeaderValues(metadata, kBaggageHeader));
    std::optional<absl::Duration> remaining;
    if (deadline.has_value()) remaining = *deadline - absl::Now();
    observer_.Start(method_, ctx, arrival_ns, remaining,
                    {traceparents.data(), traceparents.size()});
    // grpc::ServerContext serves the sync (and async) API; the callback API
    // uses grpc::CallbackServerContext.
    auto* sync_context = dynamic_cast<grpc::ServerContext*>(sc);
    auto call = std::make_shared<ServerCall>(sync_context, ctx,
                                             std::move(cancel), deadline);
    ServerCallRegistry::Get().Add(sc, call);
    if (sync_context != nullptr) {
      // The sync handler runs on this thread right after this hook returns.
      current_scope_ = std::make_unique<ScopedContext>(ctx);
    }
    std::lock_guard<std::mutex> lock(mu_);
    call_ = std::move(call);
    if (sync_context != nullptr) scope_thread_ = std::this_thread::get_id();
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
  bool OnScopeThread() const {
    std::lock_guard<std::mutex> lock(mu_);
    return scope_thread_ == std::this_thread::get_id();
  }

  // Used as a registry key only: this object may outlive the ServerContext.
  grpc::ServerContextBase* const sc_;
  const char* const method_;  // gRPC's, valid for the call.
  // Started before call_ is published under mu_, finished by the one
  // EndCall (which reads call_ under mu_ first).
  internal::ServerCallObserver observer_;
  std::atomic<bool> status_sent_{false};
  std::atomic<bool> ended_{false};  // EndCall has run.
  // Only touched on the sync handler's thread (and in the destructor).
  std::unique_ptr<ScopedContext> current_scope_;

  mutable std::mutex mu_;
  // Set by POST_RECV_INITIAL_METADATA, the first hook of every call, before
  // the handler runs; never changed afterwards.
  std::shared_ptr<ServerCall> call_;  // Guarded by mu_.
  std::thread::id scope_thread_;      // Guarded by mu_. Sync API only.
};

class ServerInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ServerCallInterceptor(info);
  }
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
  std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      creators;
  creators.push_back(MakeServerInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(creators));
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeServerInterceptorFactory() {
  return std::make_unique<ServerInterceptorFactory>();
}

Context FromServerContext(const grpc::ServerContextBase* sc) {
  std::shared_ptr<ServerCall> call = ServerCallRegistry::Get().Find(sc);
  if (call == nullptr) return CanceledContext();
  call->OnHandlerStarted();
  return call->context();
}

}  // namespace reqctx
