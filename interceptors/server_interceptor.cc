#include "interceptors/server_interceptor.h"

#include <grpc/support/time.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <typeinfo>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/current.h"
#include "context/internal/owned_deadline.h"
#include "interceptors/internal/call_ledger.h"
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

// The values of the three headers the glue reads, in arrival order, and
// whether the call asks for its ledger whatever its status.
struct TraceHeaders {
  HeaderList traceparents, tracestates, baggages;
  bool ledger_always = false;
};

// One pass over the call's metadata (a handful of entries) instead of one
// map lookup per header: keys are told apart by length first, then
// compared.
TraceHeaders TraceHeadersOf(
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  static constexpr std::string_view kTraceparent = internal::kTraceparentHeader;
  static constexpr std::string_view kTracestate = internal::kTracestateHeader;
  static constexpr std::string_view kBaggage = kBaggageHeader;
  static constexpr std::string_view kLedger = internal::kLedgerRequestHeader;
  static_assert(kTraceparent.size() != kTracestate.size() &&
                kTraceparent.size() != kBaggage.size() &&
                kTracestate.size() != kBaggage.size() &&
                kLedger.size() != kTraceparent.size() &&
                kLedger.size() != kTracestate.size() &&
                kLedger.size() != kBaggage.size());
  TraceHeaders h;
  for (const auto& [key, value] : metadata) {
    const std::string_view k(key.data(), key.size());
    if (k.size() == kLedger.size() && k == kLedger) {
      h.ledger_always = std::string_view(value.data(), value.size()) ==
                        internal::kLedgerRequestAlways;
      continue;
    }
    HeaderList* list = k.size() == kTraceparent.size() && k == kTraceparent
                           ? &h.traceparents
                       : k.size() == kTracestate.size() && k == kTracestate
                           ? &h.tracestates
                       : k.size() == kBaggage.size() && k == kBaggage
                           ? &h.baggages
                           : nullptr;
    if (list != nullptr) list->emplace_back(value.data(), value.size());
  }
  return h;
}

// The time left until the call's deadline, read once from gRPC's raw
// gpr_timespec (nullopt: no deadline). Not from ServerContextBase::deadline():
// its conversion to system_clock::time_point (nanoseconds in int64, +-292
// years) overflows for a far but valid `grpc-timeout` such as "99999999H"
// (~11,400 years), and the wrapped value lies in the past, which failed such
// calls with DEADLINE_EXCEEDED at once. absl::Duration has the range. The
// difference is taken on the deadline's own clock (gRPC keeps server
// deadlines on the monotonic clock), and the Context's deadline is measured
// from now on the monotonic clock (WithTimeout, or its owned form), so
// stepping the wall clock neither hurries nor delays it.
std::optional<absl::Duration> RemainingOf(const grpc::ServerContextBase& sc) {
  gpr_timespec raw = sc.raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) == 0) {
    return std::nullopt;
  }
  gpr_timespec left = gpr_time_sub(raw, gpr_now(raw.clock_type));
  return absl::Seconds(left.tv_sec) + absl::Nanoseconds(left.tv_nsec);
}

// The smaller of `remaining` and the call's x-envoy-expected-rq-timeout-ms
// (internal/incoming_deadline.h); only looked up when behind_envoy is set.
std::optional<absl::Duration> EnvoyRemainingOf(
    std::optional<absl::Duration> remaining,
    const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  static constexpr std::string_view kKey = internal::kEnvoyExpectedTimeoutHeader;
  HeaderList values;
  auto [first, last] =
      metadata.equal_range(grpc::string_ref(kKey.data(), kKey.size()));
  for (auto it = first; it != last; ++it) {
    values.emplace_back(it->second.data(), it->second.size());
  }
  if (values.empty()) return remaining;
  return internal::EnvoyRemaining(remaining, {values.data(), values.size()});
}

using internal::ServerApi;

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

// Whether `sc` is a CallbackServerContext (or derived from one: the generic
// callback API's). The dynamic_cast's answer is cached per thread for the
// last dynamic type seen (a thread serves one API in practice), so the usual
// call pays a typeid comparison instead of a cross-cast's type walk.
bool IsCallbackContext(const grpc::ServerContextBase* sc) {
  thread_local const std::type_info* last_type = nullptr;
  thread_local bool last_answer = false;
  const std::type_info* type = &typeid(*sc);
  if (type != last_type) {
    last_answer = dynamic_cast<const grpc::CallbackServerContext*>(sc) != nullptr;
    last_type = type;
  }
  return last_answer;
}

ServerApi ApiOf(const grpc::ServerContextBase* sc) {
  if (IsCallbackContext(sc)) return ServerApi::kCallback;
  return IsSyncThread() ? ServerApi::kSync : ServerApi::kAsync;
}

// Begins `call` on its first hook: the Context with the incoming deadline
// (or the one `rules` give the handler), the trace, the rules' values and
// the baggage; starts the call's observer. On the callback and sync APIs
// the caller's deadline is owned, not armed: gRPC enforces it and reports
// it as the call's close, which ServerCall turns into DEADLINE_EXCEEDED (no
// reqctx timer per call). On the async API the close waits for the
// application's completion queue, and a deadline a rule changed is not
// gRPC's, so then the deadline's own timer is armed.
void BeginCall(ServerCall& call, ServerApi api, const char* method,
               const ServerCallRules& rules,
               const std::multimap<grpc::string_ref, grpc::string_ref>& metadata) {
  const int64_t arrival_ns = internal::MonoNowNs();
  const std::optional<absl::Duration> grpc_remaining =
      RemainingOf(*call.server_context());
  std::optional<absl::Duration> remaining =
      rules.behind_envoy ? EnvoyRemainingOf(grpc_remaining, metadata)
                         : grpc_remaining;
  HandlerBudget handler{remaining, CauseKind::kCallerDeadline};
  if (rules.deadline) {
    handler = rules.deadline(method, remaining);
    if (handler.remaining == remaining) handler.cause = CauseKind::kCallerDeadline;
  }
  const std::optional<absl::Duration>& handler_remaining = handler.remaining;
  // Only gRPC's own deadline is enforced by gRPC (not Envoy's, not a rule's).
  const bool owned = handler_remaining.has_value() &&
                     api != ServerApi::kAsync &&
                     handler_remaining == grpc_remaining;
  // A process-wide status: a reference count, no allocation, per call.
  const absl::Status& cause = CauseStatus(handler.cause);
  std::pair<Context, CancelFunc> base =
      !handler_remaining.has_value()
          ? WithCancel(Background())
      : owned ? internal::WithOwnedTimeout(Background(), *handler_remaining,
                                           cause)
              : WithTimeoutCause(Background(), *handler_remaining, cause);
  const TraceHeaders headers = TraceHeadersOf(metadata);
  const HeaderList& traceparents = headers.traceparents;
  internal::IncomingTrace trace = internal::ContinueTraceOf(
      {traceparents.data(), traceparents.size()},
      {headers.tracestates.data(), headers.tracestates.size()});
  Context ctx = WithTraceContext(base.first, std::move(trace.trace));
  if (trace.tracestate.has_value()) {
    ctx = internal::WithTracestate(ctx, std::move(*trace.tracestate));
  }
  ctx = WithIncomingBaggage(ctx, headers.baggages);
  if (rules.values) {
    ctx = rules.values(method, ctx, metadata, *call.server_context());
  }
  const bool asked = headers.ledger_always &&
                     rules.ledger_return != LedgerReturn::kNever &&
                     (!rules.ledger_header_trusted ||
                      rules.ledger_header_trusted(*call.server_context()));
  call.ledger().Begin(method, rules.ledger_host,
                      absl::FromUnixNanos(arrival_ns), remaining,
                      asked ? LedgerReturn::kAlways : rules.ledger_return,
                      /*forward=*/asked);
  call.SetShutdownSignal(rules.shutdown.get());
  call.SetArrival(arrival_ns);
  call.observer().Start(method, ctx, arrival_ns, remaining,
                        {traceparents.data(), traceparents.size()});
  std::optional<internal::IncomingDeadline> deadline;
  if (remaining.has_value()) deadline.emplace(*remaining);
  call.Begin(api, std::move(ctx), std::move(base.second), std::move(deadline),
             owned);
}

// The call whose initial hook is dispatching on this thread: gRPC runs a
// sync handler inside the Proceed() of that hook (the handler is the
// continuation of the initial batch), an async call's Proceed() only queues
// its tag. So FromServerContext() for this call on this thread proves a sync
// handler even where IsSyncThread() could not tell.
thread_local ServerCall* t_dispatching = nullptr;

// One per call (gRPC creates it with the call and destroys it after both the
// ServerContext and the call's close notification are gone). A thin adapter:
// every hook goes to the call's one owner, ServerCall, which keeps all of
// the call's state (internal/server_call.h).
//
// Allocation: the interceptor lives in the same allocation as its
// ServerCall (one make_shared per call, not two): New() places it in the
// block's storage, and gRPC's `delete` reaches the destroying operator
// delete below, which destroys it and drops its reference to the block (the
// block, and so the storage, is freed once the registry and the watcher
// have let go of the ServerCall too).
class ServerCallInterceptor final : public grpc::experimental::Interceptor {
 public:
  // The only way to make one (see Allocation). `rules` belongs to the
  // factory, which outlives its server's calls.
  static ServerCallInterceptor* New(grpc::experimental::ServerRpcInfo* info,
                                    const ServerCallRules* rules);

  // Ends the call if no status was sent (End is idempotent).
  ~ServerCallInterceptor() override { call()->End(); }

  // `delete` of one made by New() (gRPC's, through Interceptor's virtual
  // destructor): destroys it in place and drops its share of the block that
  // holds it, last (that may free the block, and *p with it).
  static void operator delete(ServerCallInterceptor* p,
                              std::destroying_delete_t) {
    // gRPC may delete it on another thread than the one that made it
    // (ordered by its core, which TSan cannot see): call()'s acquire orders
    // the construction before the read of owner_.
    (void)p->call();
    std::shared_ptr<ServerCall> block = std::move(p->owner_);
    p->~ServerCallInterceptor();
  }

  void Intercept(InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_CANCEL)) {
      // Server-side TryCancel (any thread; must not block; no Proceed): the
      // handler's own decision, no cause of the glue's.
      call()->OnCancelled(CauseKind::kNone);
      return;
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      ServerCall* c = call();
      const ServerApi api = ApiOf(c->server_context());
      BeginCall(*c, api, method_, *rules_, *methods->GetRecvInitialMetadata());
      if (api != ServerApi::kCallback) {
        Dispatch(methods, api);
        return;
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      std::multimap<std::string, std::string>* trailers =
          methods->GetSendTrailingMetadata();
      if (rules_->trailers) rules_->trailers(method_, status, trailers);
      ServerCall* c = call();
      // The ledger, when this status returns it (call_ledger.h).
      if (std::optional<grpc::Status> with =
              c->LedgerStatus(status, trailers)) {
        methods->ModifySendStatus(*with);
      }
      c->OnStatusSending(status.error_code());
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_CLOSE)) {
      call()->OnClosed();
    }
    methods->Proceed();
  }

 private:
  // Proceeds with the initial batch of a sync or async call. A sync handler
  // runs inside this Proceed(), on this thread: Current() is the call's
  // Context exactly for that span (a scope opened and closed on this thread,
  // around the handler). An async call's Proceed() only queues its tag: no
  // scope, so nothing is left behind on the completion-queue thread.
  void Dispatch(InterceptorBatchMethods* methods, ServerApi api) {
    ServerCall* call = this->call();
    ServerCall* const outer = std::exchange(t_dispatching, call);
    if (api == ServerApi::kSync) {
      ScopedContext scope(call->context());
      methods->Proceed();
    } else {
      methods->Proceed();
    }
    t_dispatching = outer;
  }

  // The call, through call_: gRPC may run the hooks on threads other than
  // the one that constructed this object, ordered by its core, which TSan
  // cannot see; the acquire load of call_ (one plain load on x86) orders
  // them after the construction where TSan can see it, without a lock.
  ServerCall* call() const { return call_.load(std::memory_order_acquire); }

  struct Block;

  ServerCallInterceptor(std::shared_ptr<ServerCall> owner,
                        grpc::experimental::ServerRpcInfo* info,
                        const ServerCallRules* rules)
      : owner_(std::move(owner)),
        method_(info->method() != nullptr ? info->method() : ""),
        rules_(rules) {
    call_.store(owner_.get(), std::memory_order_release);
  }

  // Set at construction, before gRPC runs any hook; moved out only by the
  // destroying delete. Read only through call() (see there).
  std::shared_ptr<ServerCall> owner_;
  std::atomic<ServerCall*> call_{nullptr};
  const char* const method_;  // gRPC's (static in generated code), or "".
  const ServerCallRules* const rules_;
};

// The one allocation of a call: its ServerCall (shared: interceptor,
// registry, watcher) with room for its interceptor. The interceptor is not
// a member: the destroying delete destroys it, the block only frees it.
struct ServerCallInterceptor::Block final : ServerCall {
  explicit Block(const grpc::ServerContextBase* sc) : ServerCall(sc) {}
  alignas(ServerCallInterceptor) unsigned char
      interceptor[sizeof(ServerCallInterceptor)];
};

ServerCallInterceptor* ServerCallInterceptor::New(
    grpc::experimental::ServerRpcInfo* info, const ServerCallRules* rules) {
  std::shared_ptr<Block> block =
      std::make_shared<Block>(info->server_context());
  void* storage = block->interceptor;
  return ::new (storage) ServerCallInterceptor(std::move(block), info, rules);
}

class ServerInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ServerInterceptorFactory(ServerCallRules rules)
      : rules_(std::move(rules)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return ServerCallInterceptor::New(info, &rules_);
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

namespace internal {

void HoldingServerCall(const grpc::ServerContextBase* sc) {
  if (std::shared_ptr<ServerCall> call = ServerCallRegistry::Get().Find(sc)) {
    call->ArmDeadline();
  }
}

void CancelServerCall(const grpc::ServerContextBase* sc,
                      const absl::Status& cause) {
  if (cause.ok()) return;
  if (std::shared_ptr<ServerCall> call = ServerCallRegistry::Get().Find(sc)) {
    call->CancelWith(cause);
  }
}

// The live call under `sc`, or null.
std::shared_ptr<ServerCall> LiveCall(const grpc::ServerContextBase* sc) {
  return ServerCallRegistry::Get().Find(sc);
}

void NoteServerCallPolicy(const grpc::ServerContextBase* sc,
                          const LedgerPolicy& policy,
                          std::optional<absl::Duration> reply_margin) {
  if (std::shared_ptr<ServerCall> call = LiveCall(sc)) {
    call->ledger().NotePolicy(policy, reply_margin);
  }
}

void NoteServerCallRefused(const grpc::ServerContextBase* sc,
                           CauseKind cause) {
  if (std::shared_ptr<ServerCall> call = LiveCall(sc)) {
    call->ledger().NoteRefused(cause);
  }
}

void NoteServerCallQueued(const grpc::ServerContextBase* sc,
                          absl::Duration queued, bool shed) {
  if (std::shared_ptr<ServerCall> call = LiveCall(sc)) {
    call->ledger().NoteQueued(queued, shed);
  }
}

void AtServerCallEnd(const grpc::ServerContextBase* sc,
                     std::function<void()> f) {
  if (std::shared_ptr<ServerCall> call = ServerCallRegistry::Get().Find(sc)) {
    call->AtEnd(std::move(f));
    return;
  }
  f();
}

}  // namespace internal

namespace {

// FromServerContext, and the call's arrival_ns() in `*arrival_ns` (left
// unchanged if `sc` has no live call).
Context ContextAndArrival(const grpc::ServerContextBase* sc,
                          int64_t* arrival_ns) {
  // Asked from inside the call's own dispatch (a sync handler, the usual
  // case): that call is t_dispatching, alive (its interceptor is running
  // Dispatch) and begun (Dispatch runs after Begin) -- its Context without
  // the registry's lock and lookup. Watched as below (a no-op once watched:
  // one atomic load).
  if (ServerCall* dispatching = t_dispatching;
      dispatching != nullptr && dispatching->server_context() == sc) {
    dispatching->StartWatching();
    if (arrival_ns != nullptr) *arrival_ns = dispatching->arrival_ns();
    return dispatching->context();
  }
  std::shared_ptr<ServerCall> call = ServerCallRegistry::Get().Find(sc);
  if (call == nullptr) return CanceledContext();
  // Asked from inside the call's own dispatch: a sync handler (see
  // t_dispatching). A no-op if it is already watched.
  if (t_dispatching == call.get()) call->StartWatching();
  if (arrival_ns != nullptr) *arrival_ns = call->arrival_ns();
  return call->context();
}

}  // namespace

Context FromServerContext(const grpc::ServerContextBase* sc) {
  return ContextAndArrival(sc, nullptr);
}

namespace internal {

Context FromServerContextSinceHook(const grpc::ServerContextBase* sc,
                                   absl::Duration* since_hook) {
  int64_t arrival_ns = 0;
  Context ctx = ContextAndArrival(sc, &arrival_ns);
  if (arrival_ns != 0) {
    *since_hook =
        absl::Nanoseconds(std::max<int64_t>(MonoNowNs() - arrival_ns, 0));
  }
  return ctx;
}

}  // namespace internal

}  // namespace reqctx
