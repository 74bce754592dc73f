#include "interceptors/policy/server_policy.h"

#include <grpc/support/time.h>
#include <grpcpp/alarm.h>
#include <grpcpp/impl/codegen/method_handler.h>
#include <grpcpp/impl/codegen/server_callback_handlers.h>
#include <grpcpp/impl/rpc_service_method.h>
#include <grpcpp/impl/service_type.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/server_callback.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/message_lite.h"
#include "interceptors/policy/policy_metrics.h"
#include "interceptors/server_interceptor.h"
#include "interceptors/status_mapping.h"
#include "ledger/causes.h"

namespace reqctx::policy {

struct ServerPolicy::PolicyState {
  MethodPolicy policy;
  std::shared_ptr<PolicyCounters> counters;  // The shedder counts here.
  // The refusal cap of this limit's calls (minimum budget and shedding).
  std::unique_ptr<RefusalCap> cap;
  // Null: no concurrency limit. Shared with the metrics' weak pointers.
  std::shared_ptr<LoadShedder> shedder;
  // The mode for the minimum-budget check (the shedder keeps its own).
  std::atomic<ShedMode> mode{ShedMode::kEnforce};
};

struct ServerPolicy::MethodState {
  MethodState(std::string n, std::shared_ptr<PolicyState> p)
      : name(std::move(n)),
        ps(std::move(p)),
        window(static_cast<size_t>(std::max(ps->policy.learned_window, 1)),
               static_cast<size_t>(std::max(ps->policy.learned_warmup, 1))),
        metrics(metrics::PolicyMethod(name)) {}
  const std::string name;
  const std::shared_ptr<PolicyState> ps;
  LatencyWindow window;
  const metrics::PolicyMethodMetrics& metrics;  // Lives for the process.

  // The deadline rules and the minimum budget for a call that arrived under
  // `sc` with criticality `c` (counted in `counters` and the metrics): OK,
  // or the DEADLINE_EXCEEDED refusal to answer it with.
  // A call's safety valves apply (mode, refusal cap).
  absl::Status CheckArrival(const grpc::ServerContextBase& sc, Criticality c,
                            PolicyCounters& counters);
  // The handling time the shedder assumes for the next call: the mean of
  // the last kExpectedHandlingSamples handling times, so that it follows a
  // slower (or faster) handler within that many calls -- the queue then
  // stops admitting calls that can no longer finish in time -- instead of
  // over the whole learned window.
  static constexpr size_t kExpectedHandlingSamples = 64;
  absl::Duration ExpectedHandling() const {
    return window.Mean(kExpectedHandlingSamples)
        .value_or(ps->policy.expected_handling);
  }
};

namespace {

// Whether the call whose Context is `call_ctx` was canceled by its client
// (or its client went away) before its status went out: the glue ends the
// Context with that cause (CauseKind::kClientCancel) on every API -- pushed
// on the callback API, when the completion queue delivers the close on the
// async API, at the watcher's poll on the sync API.
bool ClientCanceled(const Context& call_ctx) {
  return CauseOf(Cause(call_ctx)) == CauseKind::kClientCancel;
}

// Whether the Context `call_ctx` ended by a deadline (the caller's, one a
// policy defaulted or capped, or the handler's earlier one: reply_margin).
bool DeadlineEnded(const Context& call_ctx) {
  return call_ctx.Err().code() == absl::StatusCode::kDeadlineExceeded;
}

// How long before our deadline a client's cancel is still its deadline
// passing: the client's clock started when it wrote grpc-timeout, ours when
// the headers arrived (its queue and the link in between), so a client
// whose deadline ended the call cancels it a little before ours ends it.
// A tenth of the budget at admission, at most 20 ms.
absl::Duration ClientDeadlineSlack(absl::Duration budget) {
  return std::clamp(budget / 10, absl::ZeroDuration(), absl::Milliseconds(20));
}

// A call admitted at `start`, bound to `call_ctx`, that gRPC had held for
// `held` (>= 0) after reqctx's interceptor first saw it and before the
// policy first looked at it (FromServerContextSinceHook), is over now: its
// handling time (from `start`) is learned (LatencyWindow) and its slot
// given back with its outcome (ClassifyEnd, its budget measured from
// `start - held`: the budget it had when the policy would have seen it had
// gRPC not held it -- on the async API gRPC queues the request's tag again
// after the interceptor ran, and a busy completion-queue thread eats the
// budget there; on the sync and callback APIs `held` is ~0), counted in
// reqctx_policy_limit_samples_total when the slot was held. The shedder's
// own queue is not added back: a call admitted from it had its budget
// checked when its turn came (LoadShedder refuses it then if it cannot
// finish in time), and counting that wait would make the limit's own queue
// a reason to lower the limit. `canceled`: its client canceled it (or, on
// the sync API, gRPC reports the call cancelled). A call that ended at its deadline
// or after its client's cancel may have been cut short: its handling time
// is only a lower bound, learned only if its handler ran on a whole
// expected handling past its deadline, or (canceled before it) took at
// least the expected handling (a handler that ignored its Context and kept
// working shows its real cost; a flood of calls with tiny deadlines or
// instant cancels must not pull the expected handling down to their budget
// -- and then count as drops). A call whose Context ended by its deadline
// is at its deadline even when the clock read here is a little earlier:
// gRPC's deadline timer may end the call just before `deadline` (converted
// between clocks) passes, and such a call must not be learned as a fast
// success; so is a call its client canceled within ClientDeadlineSlack of
// the deadline (the client's own deadline ended it: a late call).
void Ended(ServerPolicy::MethodState& state, ShedSlot& slot,
           absl::Duration held, absl::Time start,
           std::optional<absl::Time> deadline, absl::Duration expected,
           const Context& call_ctx, bool canceled) {
  absl::Time end = absl::Now();
  if (deadline.has_value() &&
      (DeadlineEnded(call_ctx) ||
       (canceled && end >= *deadline - ClientDeadlineSlack(*deadline - start)))) {
    end = std::max(end, *deadline);
  }
  const bool at_deadline = deadline.has_value() && end >= *deadline;
  // A late call is judged against the mean handling time, not the top of
  // its spread: tried (the longest of the last 64), it made the late calls
  // of a real queue -- whose waits raise that longest time -- no samples at
  // all, so Gradient2 saw only the calls that made it and AIMD and Vegas no
  // drop (overload_bench's slowdown: goodput 0.52-0.82, limits 37-47 of 32
  // workers).
  const limits::Outcome outcome =
      ClassifyEnd(start - held, end, deadline, expected, canceled);
  const bool cut_short = canceled || at_deadline;
  // A call cut at its deadline shows its real cost only when its handler
  // kept working a whole expected handling past it (it ignored its
  // Context). One that ended at it shows its budget plus the end's delay
  // (25-37 ms on a loaded 2-core machine): learned, the late calls of a
  // queue walked the expected handling above every budget, and from then on
  // every late call was kIgnore -- no sample, no brake (admission_flood_
  // test.cc's AQueueWithTightBudgetsBrakes held 64 of 8 cores).
  const bool kept_working =
      at_deadline ? end - *deadline >= expected : end - start >= expected;
  if (!cut_short || kept_working) state.window.Add(end - start);
  if (slot.held()) {
    static_assert(static_cast<int>(limits::Outcome::kDropped) + 1 ==
                  metrics::kLimitOutcomes);
    state.metrics.limit_samples[static_cast<int>(outcome)]->Increment();
    if (outcome == limits::Outcome::kDropped && state.ps->counters) {
      state.ps->counters->Add(PolicyCounter::kLimitDropped);
    }
  }
  slot.Release(outcome);
}

}  // namespace

namespace {

using grpc::internal::MethodHandler;
using grpc::internal::RpcMethod;
using grpc::internal::RpcServiceMethod;

// grpc::Service keeps its methods in a private vector that only grpc::Server
// reads. Apply() must swap each method's handler without destroying it
// (RpcServiceMethod::SetHandler would), so it reaches the vector through
// the one standard-conforming way to name a private member: an explicit
// template instantiation, whose arguments are not access-checked. The
// member's exact type is checked at compile time, so a gRPC that changes it
// fails to build here instead of misbehaving.
using ServiceMethods =
    std::vector<std::unique_ptr<RpcServiceMethod>> grpc::Service::*;
struct ServiceMethodsTag {
  friend ServiceMethods MethodsMember(ServiceMethodsTag);
};
template <ServiceMethods M>
struct ServiceMethodsAccess {
  friend ServiceMethods MethodsMember(ServiceMethodsTag) { return M; }
};
template struct ServiceMethodsAccess<&grpc::Service::methods_>;

std::optional<absl::Time> DeadlineOf(const grpc::ServerContextBase& sc) {
  gpr_timespec raw = sc.raw_deadline();
  if (gpr_time_cmp(raw, gpr_inf_future(raw.clock_type)) == 0) {
    return std::nullopt;
  }
  gpr_timespec real = gpr_convert_clock_type(raw, GPR_CLOCK_REALTIME);
  return absl::FromUnixSeconds(real.tv_sec) + absl::Nanoseconds(real.tv_nsec);
}

}  // namespace

absl::Status ServerPolicy::MethodState::CheckArrival(
    const grpc::ServerContextBase& sc, Criticality c,
    PolicyCounters& counters) {
  const MethodPolicy& p = ps->policy;
  const absl::Time now = absl::Now();
  ps->cap->Arrived(now);
  bool defaulted = false;
  bool capped = false;
  std::optional<absl::Time> deadline =
      EffectiveDeadline(p, DeadlineOf(sc), now, &defaulted, &capped);
  if (defaulted) {
    counters.Add(PolicyCounter::kDeadlineDefaulted);
    metrics.deadline_defaulted->Increment();
  }
  if (capped) {
    counters.Add(PolicyCounter::kDeadlineCapped);
    metrics.deadline_capped->Increment();
  }
  // What the policy did, for the call's budget ledger.
  LedgerPolicy noted;
  noted.deadline_change = defaulted ? LedgerPolicy::DeadlineChange::kDefaulted
                          : capped  ? LedgerPolicy::DeadlineChange::kCapped
                                    : LedgerPolicy::DeadlineChange::kKept;
  if ((defaulted || capped) && deadline.has_value()) {
    noted.policy_budget = *deadline - now;
  }
  if (!deadline.has_value()) {
    if (defaulted || capped) internal::NoteServerCallPolicy(&sc, noted, std::nullopt);
    return absl::OkStatus();
  }
  std::optional<absl::Duration> margin;
  if (p.reply_margin > absl::ZeroDuration()) {
    counters.Add(PolicyCounter::kReplyMarginApplied);
    margin = p.reply_margin;
  }
  const absl::Duration min = MinimumBudget(
      p, p.learned_min_budget_quantile > 0
             ? window.Quantile(p.learned_min_budget_quantile)
             : std::nullopt);
  noted.min_budget = min;
  if (defaulted || capped || margin.has_value() || min > absl::ZeroDuration()) {
    internal::NoteServerCallPolicy(&sc, noted, margin);
  }
  const absl::Duration budget = *deadline - now;
  if (budget >= min) return absl::OkStatus();
  switch (ps->mode.load(std::memory_order_relaxed)) {
    case ShedMode::kOff:
      return absl::OkStatus();
    case ShedMode::kDark:
      counters.Add(PolicyCounter::kDarkDecisions);
      RecordMinBudgetLetThrough(metrics, c, /*dark=*/true);
      return absl::OkStatus();
    case ShedMode::kEnforce:
      break;
  }
  if (!ps->cap->TryRefuse(now)) {
    counters.Add(PolicyCounter::kRefusalsCapped);
    RecordMinBudgetLetThrough(metrics, c, /*dark=*/false);
    return absl::OkStatus();
  }
  counters.Add(PolicyCounter::kMinBudgetRejected);
  RecordMinBudgetRejected(metrics, c);
  return MarkCause(
      absl::DeadlineExceededError(absl::StrCat(
          "remaining budget ", absl::FormatDuration(budget), " is below ",
          name, "'s minimum of ", absl::FormatDuration(min))),
      CauseKind::kMinBudget);
}

namespace {

// The status message of gRPC 1.51's synchronous server when a call arrives
// and its thread quota (ResourceQuota::SetMaxThreads) leaves no thread to
// run it: gRPC answers RESOURCE_EXHAUSTED itself, before any handler.
constexpr std::string_view kGrpcThreadpoolExhausted =
    "Server Threadpool Exhausted";

std::string PushbackValue(absl::Duration pushback) {
  return FormatPushback(pushback);
}

// Into the call's budget ledger: the time it waited in the shedder's queue
// and whether it was shed (only for calls that waited or were shed: the
// usual admitted call pays nothing).
void NoteShedDecision(const grpc::ServerContextBase* sc, const ShedDecision& d) {
  const bool shed = d.status.code() == absl::StatusCode::kResourceExhausted;
  if (d.queued || shed) internal::NoteServerCallQueued(sc, d.waited, shed);
}

class PolicyHandler final : public MethodHandler {
 public:
  PolicyHandler(ServerPolicy* policy,
                std::shared_ptr<ServerPolicy::MethodState> state,
                std::unique_ptr<RpcServiceMethod> original)
      : policy_(policy),
        state_(std::move(state)),
        original_(std::move(original)),
        inner_(original_->handler()),
        callback_(original_->api_type() ==
                      RpcServiceMethod::ApiType::CALL_BACK ||
                  original_->api_type() ==
                      RpcServiceMethod::ApiType::RAW_CALL_BACK),
        raw_(original_->api_type() ==
             RpcServiceMethod::ApiType::RAW_CALL_BACK) {}

  void* Deserialize(grpc_call* call, grpc_byte_buffer* req,
                    grpc::Status* status, void** handler_data) override {
    return inner_->Deserialize(call, req, status, handler_data);
  }

  void RunHandler(const HandlerParameter& param) override {
    grpc::ServerContextBase& sc = *param.server_context;
    // The call's Context: its criticality is the glue's (every `baggage`
    // header, joined), after this policy's trust rule (CallRules). And how
    // long gRPC held it since the glue first saw it (0 without the glue).
    absl::Duration held = absl::ZeroDuration();
    Context call_ctx = internal::FromServerContextSinceHook(&sc, &held);
    const Criticality crit = CriticalityOf(call_ctx);
    // 1. Deadline rules and minimum budget.
    if (param.status.ok()) {
      absl::Status refused =
          state_->CheckArrival(sc, crit, policy_->counters());
      if (!refused.ok()) {
        internal::NoteServerCallRefused(&sc, CauseKind::kMinBudget);
        internal::CancelServerCall(&sc, refused);
        Reject(param, ToGrpcStatus(refused), std::nullopt);
        return;
      }
    }
    // 2. Load shedding.
    LoadShedder* shedder = state_->ps->shedder.get();
    if (shedder == nullptr || !param.status.ok()) {
      Run(param, call_ctx, ShedSlot(), held);
      return;
    }
    const absl::Duration expected = state_->ExpectedHandling();
    if (callback_) {
      // The call may wait in the queue before its handler starts, and until
      // then gRPC reports no close to the glue: its deadline needs a timer.
      internal::HoldingServerCall(&sc);
      HandlerParameter copy = param;
      shedder->Acquire(call_ctx, crit, expected,
                       [this, copy, crit, call_ctx, held](ShedDecision d) {
                         Decided(copy, crit, call_ctx, std::move(d), held);
                       });
      return;
    }
    std::mutex mu;
    std::condition_variable cv;
    std::optional<ShedDecision> decision;
    shedder->Acquire(call_ctx, crit, expected, [&](ShedDecision d) {
      std::lock_guard<std::mutex> lock(mu);
      decision = std::move(d);
      cv.notify_all();
    });
    {
      std::unique_lock<std::mutex> lock(mu);
      // Bounded: the shedder decides at the latest when the call's Context
      // is done (deadline, cancel, end of the call).
      cv.wait(lock, [&] { return decision.has_value(); });
    }
    Decided(param, crit, call_ctx, std::move(*decision), held);
  }

 private:
  // The shedder's decision `d` on the call gRPC held for `held` (see Run).
  void Decided(const HandlerParameter& param, Criticality crit,
               const Context& call_ctx, ShedDecision d, absl::Duration held) {
    RecordShedDecision(state_->metrics, d, crit);
    NoteShedDecision(param.server_context, d);
    if (d.status.ok()) {
      Run(param, call_ctx, std::move(d.slot), held);
      return;
    }
    // Its Context says why (SHED, SERVER_SHUTDOWN; a Context that ended in
    // the queue keeps its own cause).
    internal::CancelServerCall(param.server_context, d.status);
    std::optional<absl::Duration> pushback;
    if (d.status.code() == absl::StatusCode::kResourceExhausted) {
      pushback = d.pushback;
    }
    Reject(param,
           grpc::Status(static_cast<grpc::StatusCode>(d.status.code()),
                        std::string(d.status.message())),
           pushback);
  }

  // Passes the call to the original handler, timing it; `slot` (if held)
  // is given back when the call is over, with its outcome against the
  // deadline of the call's Context `call_ctx` (its budget measured from
  // `held` before its start: the time gRPC held the call after the glue saw
  // it; see Ended), and whether its client canceled it (ClientCanceled).
  void Run(const HandlerParameter& param, const Context& call_ctx,
           ShedSlot slot, absl::Duration held) {
    const absl::Time start = absl::Now();
    std::shared_ptr<ServerPolicy::MethodState> state = state_;
    const absl::Duration expected = state->ExpectedHandling();
    const std::optional<absl::Time> deadline = call_ctx.Deadline();
    if (callback_) {
      // The handler only starts the call; it ends when its reactor finishes
      // (the status is sent) -- not when its Context is done: a handler
      // that ignores its Context keeps working past a deadline or a cancel,
      // and keeps its slot until then.
      auto held_slot = std::make_shared<ShedSlot>(std::move(slot));
      internal::AtServerCallEnd(
          param.server_context,
          [state, held_slot, held, start, deadline, expected, call_ctx] {
            Ended(*state, *held_slot, held, start, deadline, expected,
                  call_ctx, ClientCanceled(call_ctx));
          });
      inner_->RunHandler(param);
      return;
    }
    inner_->RunHandler(param);
    // IsCancelled is safe at any time on the sync API (the watcher may not
    // have polled the call yet).
    Ended(*state, slot, held, start, deadline, expected, call_ctx,
          param.server_context->IsCancelled() || ClientCanceled(call_ctx));
  }

  // Destroys the request the original handler deserialized (it would have
  // done so after running the handler), then answers with `status`.
  void Reject(const HandlerParameter& param, grpc::Status status,
              std::optional<absl::Duration> pushback) {
    if (callback_ && original_->method_type() == RpcMethod::NORMAL_RPC) {
      // Callback unary: request and response live in a MessageHolder in
      // the call's arena (grpc::internal::DefaultMessageHolder).
      if (param.internal_data != nullptr) {
        static_cast<grpc::RpcAllocatorState*>(param.internal_data)
            ->~RpcAllocatorState();
      }
    } else if (param.request != nullptr) {
      if (raw_) {
        static_cast<grpc::ByteBuffer*>(param.request)->~ByteBuffer();
      } else {
        static_cast<google::protobuf::MessageLite*>(param.request)
            ->~MessageLite();
      }
    }
    if (callback_) {
      RejectCallback(param, std::move(status), pushback);
    } else {
      RejectSync(param, status, pushback);
    }
  }

  // gRPC's own unary handler, given the refusal as the request's status:
  // it sends initial metadata and the status (with the ServerContext's
  // trailing metadata) without calling anything.
  void RejectSync(const HandlerParameter& param, const grpc::Status& status,
                  std::optional<absl::Duration> pushback) {
    if (pushback.has_value()) {
      static_cast<grpc::ServerContext*>(param.server_context)
          ->AddTrailingMetadata(kRetryPushbackHeader, PushbackValue(*pushback));
    }
    reject_sync_.RunHandler(HandlerParameter(param.call, param.server_context,
                                             nullptr, status, nullptr,
                                             nullptr));
  }

  void RejectCallback(const HandlerParameter& param, grpc::Status status,
                      std::optional<absl::Duration> pushback) {
    auto* cbc = static_cast<grpc::CallbackServerContext*>(param.server_context);
    if (pushback.has_value()) {
      cbc->AddTrailingMetadata(kRetryPushbackHeader, PushbackValue(*pushback));
    }
    using Holder =
        grpc::internal::DefaultMessageHolder<grpc::ByteBuffer, grpc::ByteBuffer>;
    auto* holder = new (grpc_call_arena_alloc(param.call->call(),
                                              sizeof(Holder))) Holder();
    // A unary callback handler over raw bytes whose reactor finishes at
    // once: it sends the status and ends the call, whatever the method's
    // streaming shape (the client reads the status).
    grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>
        answer([status](grpc::CallbackServerContext* ctx,
                        const grpc::ByteBuffer*, grpc::ByteBuffer*) {
          // The context's own reactor: gRPC owns and ends it with the call.
          grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
          reactor->Finish(status);
          return reactor;
        });
    answer.RunHandler(HandlerParameter(param.call, param.server_context,
                                       holder->request(), grpc::Status::OK,
                                       holder, param.call_requester));
  }

  ServerPolicy* const policy_;
  const std::shared_ptr<ServerPolicy::MethodState> state_;
  const std::unique_ptr<RpcServiceMethod> original_;
  MethodHandler* const inner_;
  const bool callback_;
  const bool raw_;
  grpc::internal::RpcMethodHandler<grpc::Service, grpc::ByteBuffer,
                                   grpc::ByteBuffer>
      reject_sync_{[](grpc::Service*, grpc::ServerContext*,
                      const grpc::ByteBuffer*, grpc::ByteBuffer*) {
                     return grpc::Status::OK;  // Never called.
                   },
                   nullptr};
};

}  // namespace

ServerPolicy::ServerPolicy(ServerPolicyOptions options)
    : options_(std::move(options)),
      counters_(std::make_shared<PolicyCounters>()),
      mode_(options_.mode) {
  auto make = [this](const MethodPolicy& p) {
    auto ps = std::make_shared<PolicyState>();
    ps->policy = p;
    ps->counters = counters_;
    ps->cap = std::make_unique<RefusalCap>(p.max_refused_share,
                                           p.refusal_window);
    ps->mode.store(options_.mode, std::memory_order_relaxed);
    if (SheddingOn(p)) {
      LoadShedderOptions o = ShedderOptionsFor(p);
      o.mode = options_.mode;
      ps->shedder = std::make_shared<LoadShedder>(std::move(o), counters_.get(),
                                                  ps->cap.get());
    }
    return ps;
  };
  if (absl::StatusOr<PeerRanges> r =
          PeerRanges::Parse(options_.criticality.trusted_peers);
      r.ok()) {
    trusted_peers_ = *std::move(r);
  }
  default_state_ = make(options_.defaults);
  for (const auto& [name, p] : options_.methods) {
    method_states_.emplace(name, make(p));
  }
}

ServerPolicy::~ServerPolicy() = default;

absl::Status ServerPolicy::Validate() const {
  const CriticalityTrustOptions& trust = options_.criticality;
  if (absl::StatusOr<PeerRanges> r = PeerRanges::Parse(trust.trusted_peers);
      !r.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("criticality.trusted_peers: ", r.status().message()));
  }
  if (trust.trust == CriticalityTrust::kListedPeers &&
      trust.trusted_peers.empty()) {
    return absl::InvalidArgumentError(
        "criticality.trusted_peers: empty, but trust is kListedPeers (use "
        "kNobody to trust no caller)");
  }
  switch (trust.trust) {
    case CriticalityTrust::kEveryone:
    case CriticalityTrust::kNobody:
    case CriticalityTrust::kListedPeers:
      break;
    default:
      return absl::InvalidArgumentError("criticality.trust: unknown value");
  }
  switch (trust.untrusted) {
    case Criticality::kSheddable:
    case Criticality::kDefault:
    case Criticality::kCritical:
      break;
    default:
      return absl::InvalidArgumentError(
          "criticality.untrusted: unknown value");
  }
  absl::Status s = ValidateMethodPolicy(options_.defaults);
  if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("defaults: ", s.message()));
  for (const auto& [name, p] : options_.methods) {
    s = ValidateMethodPolicy(p);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", s.message()));
  }
  return absl::OkStatus();
}

void ServerPolicy::SetMode(ShedMode mode) {
  mode_.store(mode, std::memory_order_relaxed);
  auto set = [mode](PolicyState& ps) {
    ps.mode.store(mode, std::memory_order_relaxed);
    if (ps.shedder) ps.shedder->SetMode(mode);
  };
  set(*default_state_);
  for (const auto& [name, ps] : method_states_) set(*ps);
}

ShedMode ServerPolicy::Mode() const {
  return mode_.load(std::memory_order_relaxed);
}

std::optional<ShedderStats> ServerPolicy::LimiterStats(
    std::string_view full_method) const {
  auto it = method_states_.find(full_method);
  const PolicyState& ps =
      it == method_states_.end() ? *default_state_ : *it->second;
  if (ps.shedder == nullptr) return std::nullopt;
  return ps.shedder->Stats();
}

int ServerPolicy::Running() const {
  int n = default_state_->shedder ? default_state_->shedder->running() : 0;
  for (const auto& [name, ps] : method_states_) {
    if (ps->shedder) n += ps->shedder->running();
  }
  return n;
}

int ServerPolicy::Queued() const {
  int n = default_state_->shedder ? default_state_->shedder->queued() : 0;
  for (const auto& [name, ps] : method_states_) {
    if (ps->shedder) n += ps->shedder->queued();
  }
  return n;
}

const MethodPolicy& ServerPolicy::PolicyFor(std::string_view full_method) const {
  auto it = method_states_.find(full_method);
  return it == method_states_.end() ? default_state_->policy
                                    : it->second->policy;
}

std::shared_ptr<ServerPolicy::MethodState> ServerPolicy::StateFor(
    std::string_view full_method) {
  std::lock_guard<std::mutex> lock(states_mu_);
  auto it = methods_.find(full_method);
  if (it != methods_.end()) return it->second;
  auto ps = method_states_.find(full_method);
  std::shared_ptr<PolicyState> p =
      ps == method_states_.end() ? default_state_ : ps->second;
  auto state = std::make_shared<MethodState>(std::string(full_method), p);
  methods_.emplace(std::string(full_method), state);
  if (p->shedder != nullptr) {
    PublishLimiter(std::string(full_method), p->shedder);
  }
  return state;
}

absl::Status ServerPolicy::Apply(grpc::Service* service) {
  if (service == nullptr) {
    return absl::FailedPreconditionError("ServerPolicy::Apply: null service");
  }
  if (absl::Status s = Validate(); !s.ok()) {
    return absl::FailedPreconditionError(s.message());
  }
  auto& methods = service->*MethodsMember(ServiceMethodsTag{});
  for (std::unique_ptr<RpcServiceMethod>& m : methods) {
    // Null: a generic method; no handler: served through the async API.
    if (m == nullptr || m->handler() == nullptr) continue;
    const RpcServiceMethod::ApiType api = m->api_type();
    const char* name = m->name();
    const RpcMethod::RpcType type = m->method_type();
    std::shared_ptr<MethodState> state = StateFor(name);
    std::unique_ptr<RpcServiceMethod> original = std::move(m);
    auto* wrapper = new PolicyHandler(this, state, std::move(original));
    m = std::make_unique<RpcServiceMethod>(name, type, wrapper);
    m->SetServerApiType(api);
  }
  return absl::OkStatus();
}

void ServerPolicy::InstallInterceptors(grpc::ServerBuilder& builder) {
  InstallServerInterceptorsWithRules(builder, CallRules());
}

ServerCallRules ServerPolicy::CallRules() const {
  ServerCallRules rules;
  rules.behind_envoy = options_.behind_envoy;
  rules.deadline = [this](std::string_view method,
                          std::optional<absl::Duration> remaining)
      -> HandlerBudget {
    const MethodPolicy& p = PolicyFor(method);
    const absl::Time now = absl::Now();
    std::optional<absl::Time> incoming;
    if (remaining.has_value()) incoming = now + *remaining;
    const std::optional<absl::Time> effective =
        EffectiveDeadline(p, incoming, now, nullptr, nullptr);
    std::optional<absl::Time> d = HandlerDeadline(p, effective, now);
    if (!d.has_value()) return HandlerBudget();
    // Earlier than the (capped or defaulted) deadline: the reply margin's.
    return {*d - now, d != effective ? CauseKind::kReplyMargin
                                     : CauseKind::kDeadlinePolicy};
  };
  // The glue puts the call's baggage (every `baggage` header, joined) in its
  // Context, where CriticalityOf finds it; this rule runs after that, and
  // replaces the criticality of a caller that is not trusted. The method's
  // metric handles go in, so DetachWithBound counts under the call's
  // method.
  rules.values =
      [this](std::string_view method, const Context& ctx,
             const std::multimap<grpc::string_ref, grpc::string_ref>&,
             const grpc::ServerContextBase& sc) {
        Context c = WithPolicyMethod(ctx, &metrics::PolicyMethod(method));
        if (options_.criticality.trust == CriticalityTrust::kEveryone) {
          return c;
        }
        return WithTrustedCriticality(c, sc.peer());
      };
  // `reqctx-ledger: always` is believed from the callers whose criticality
  // is (an edge that trusts nobody's lets no client make every hop return
  // its ledger on every call).
  if (options_.criticality.trust != CriticalityTrust::kEveryone) {
    rules.ledger_header_trusted = [this](const grpc::ServerContextBase& sc) {
      return options_.criticality.trust == CriticalityTrust::kListedPeers &&
             trusted_peers_.Contains(sc.peer());
    };
  }
  // gRPC's own refusal when its synchronous server has no thread left
  // (grpc::ResourceQuota::SetMaxThreads) carries no pushback: add one, so
  // every RESOURCE_EXHAUSTED this server sends for overload tells the client
  // when to come back (a handler's own RESOURCE_EXHAUSTED is left alone).
  rules.trailers = [this](std::string_view method, const grpc::Status& status,
                          std::multimap<std::string, std::string>* trailers) {
    if (status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED ||
        status.error_message() != kGrpcThreadpoolExhausted ||
        trailers == nullptr || trailers->count(kRetryPushbackHeader) > 0) {
      return;
    }
    trailers->emplace(kRetryPushbackHeader,
                      PushbackValue(PolicyFor(method).expected_handling));
  };
  return rules;
}

Context ServerPolicy::WithTrustedCriticality(const Context& ctx,
                                             std::string_view peer) const {
  const CriticalityTrustOptions& trust = options_.criticality;
  switch (trust.trust) {
    case CriticalityTrust::kEveryone:
      return ctx;
    case CriticalityTrust::kListedPeers:
      if (trusted_peers_.Contains(peer)) return ctx;
      break;
    case CriticalityTrust::kNobody:
      break;
  }
  return WithCriticality(ctx, trust.untrusted);
}

void ServerPolicy::AdmitAsync(std::string_view full_method,
                              grpc::ServerContext* sc,
                              grpc::CompletionQueue* cq, void* tag,
                              AsyncAdmission* admission) {
  std::shared_ptr<MethodState> state = StateFor(full_method);
  absl::Duration held = absl::ZeroDuration();
  Context call_ctx = internal::FromServerContextSinceHook(sc, &held);
  const Criticality crit = CriticalityOf(call_ctx);
  absl::Status refused = state->CheckArrival(*sc, crit, *counters_);
  LoadShedder* shedder = state->ps->shedder.get();
  // What Done() judges the call's end by (Ended), with or without a limit:
  // without its deadline and Context a call cut at its deadline, or
  // canceled by its client, was learned as a handling time (a flood of
  // short deadlines then taught the method its budget).
  {
    std::lock_guard<std::mutex> lock(admission->mu_);
    admission->deadline_ = call_ctx.Deadline();
    admission->held_ = held;
    admission->ctx_ = call_ctx;
  }
  if (!refused.ok()) internal::NoteServerCallRefused(sc, CauseKind::kMinBudget);
  if (!refused.ok() || shedder == nullptr) {
    ShedDecision d;
    d.status = std::move(refused);
    admission->Decide(std::move(state), std::move(d), cq, tag);
    return;
  }
  const absl::Duration expected = state->ExpectedHandling();
  shedder->Acquire(call_ctx, crit, expected,
                   [admission, state, crit, cq, tag, sc](ShedDecision d) {
                     RecordShedDecision(state->metrics, d, crit);
                     NoteShedDecision(sc, d);
                     admission->Decide(state, std::move(d), cq, tag);
                   });
}

AsyncAdmission::AsyncAdmission() = default;

AsyncAdmission::~AsyncAdmission() { Done(); }

void AsyncAdmission::Decide(std::shared_ptr<ServerPolicy::MethodState> state,
                            ShedDecision d, grpc::CompletionQueue* cq,
                            void* tag) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    state_ = std::move(state);
    status_ = std::move(d.status);
    if (status_.code() == absl::StatusCode::kResourceExhausted) {
      pushback_ = d.pushback;
    }
    slot_ = std::move(d.slot);
    admitted_at_ = absl::Now();
    expected_ = state_->ExpectedHandling();
    decided_ = true;
  }
  // An alarm that is already due: gRPC delivers `tag` on `cq` (ok = true)
  // from the queue's own Next(), like any other event of the call.
  alarm_.Set(cq, gpr_now(GPR_CLOCK_MONOTONIC), tag);
}

bool AsyncAdmission::admitted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return decided_ && status_.ok();
}

absl::Status AsyncAdmission::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!decided_) return absl::FailedPreconditionError("not decided yet");
  return status_;
}

std::optional<absl::Duration> AsyncAdmission::pushback() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pushback_;
}

grpc::Status AsyncAdmission::Refusal(grpc::ServerContext* sc) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!decided_) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        "AsyncAdmission read before its tag arrived");
  }
  if (pushback_.has_value()) {
    sc->AddTrailingMetadata(kRetryPushbackHeader, PushbackValue(*pushback_));
  }
  internal::CancelServerCall(sc, status_);
  return ToGrpcStatus(status_);
}

void AsyncAdmission::Done() {
  std::shared_ptr<ServerPolicy::MethodState> state;
  ShedSlot slot;
  absl::Duration held;
  absl::Time start;
  std::optional<absl::Time> deadline;
  absl::Duration expected;
  Context ctx;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!decided_ || done_ || !status_.ok()) return;
    ctx = ctx_;
    done_ = true;
    state = state_;
    slot = std::move(slot_);
    held = held_;
    start = admitted_at_;
    deadline = deadline_;
    expected = expected_;
  }
  Ended(*state, slot, held, start, deadline, expected, ctx,
        ClientCanceled(ctx));
}

}  // namespace reqctx::policy
