#include "interceptors/client_interceptor.h"

#include <grpcpp/create_channel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/internal/owned_deadline.h"
#include "interceptors/internal/call_ledger.h"
#include "interceptors/internal/call_observer.h"
#include "interceptors/internal/client_binding_registry.h"
#include "interceptors/internal/grpc_timeout.h"
#include "interceptors/internal/outbound_headers.h"
#include "interceptors/internal/server_call.h"
#include "interceptors/status_mapping.h"
#include "ledger/causes.h"
#include "ledger/grpc_ledger.h"
#include "w3c/baggage_context.h"
#include "w3c/trace_propagation.h"

namespace reqctx {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::InterceptorBatchMethods;
using internal::ClientBindingRegistry;

// One per call; gRPC destroys it with the call's ClientContext.
class ClientCallInterceptor final : public grpc::experimental::Interceptor {
 public:
  ClientCallInterceptor(grpc::experimental::ClientRpcInfo* info,
                        size_t header_budget)
      : cc_(info->client_context()),
        method_(info->method()),
        header_budget_(header_budget) {
    // Publishes the construction to hooks that gRPC runs on its own
    // threads (a callback stream's POST_SEND hooks), handed over through
    // gRPC core, which TSan cannot see: their first failed_ load (acquire)
    // reads this store.
    failed_.store(false, std::memory_order_release);
  }

  // A call whose status was never received (gRPC requires it to be) still
  // drops its cancel registration here.
  ~ClientCallInterceptor() override {
    // The status hook may have run on another thread than this one, handed
    // over by gRPC core (which TSan cannot see; e.g. a callback stream's
    // ClientContext released after OnDone): FinishCall's acquire of
    // finish_done_ orders what that hook wrote before the members are
    // destroyed.
    FinishCall(nullptr, nullptr);
  }

  void Intercept(InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_CANCEL)) {
      return;  // TryCancel, on any thread: nothing to do, no Proceed needed.
    }
    bool hijack = false;
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      // Before anything reads it: gRPC aborts the process on a header it
      // refuses, and the next hop resets the channel on one over its limit.
      std::multimap<std::string, std::string>& metadata =
          *methods->GetSendInitialMetadata();
      internal::EnforceOutboundHeaders(metadata, header_budget_);
      hijack = StartCall(metadata);
    }
    if (std::optional<grpc::Status> failure = Failure()) {
      // Hijacked: this interceptor answers in place of the server.
      if (methods->QueryInterceptionHookPoint(
              InterceptionHookPoints::PRE_RECV_MESSAGE)) {
        methods->FailHijackedRecvMessage();
      }
      if (methods->QueryInterceptionHookPoint(
              InterceptionHookPoints::PRE_RECV_STATUS)) {
        *methods->GetRecvStatus() = *failure;
        // POST_RECV_STATUS may run on another thread (ordered by gRPC core,
        // which TSan cannot see): FinishCall's acquire orders this write
        // before its read of the status.
        hijack_status_set_.store(true, std::memory_order_release);
      }
    }
    if (methods->QueryInterceptionHookPoint(
            InterceptionHookPoints::POST_RECV_STATUS)) {
      FinishCall(methods->GetRecvStatus(),
                 methods->GetRecvTrailingMetadata());
    }
    if (hijack) {
      methods->Hijack();
    } else {
      methods->Proceed();
    }
  }

 private:
  // Returns true if the call must be hijacked (failed without the network).
  bool StartCall(std::multimap<std::string, std::string>& metadata) {
    std::optional<Context> ctx;
    auto it = metadata.find(internal::kTraceparentHeader);
    if (it != metadata.end()) {  // Else not from NewClientContext.
      ctx = ClientBindingRegistry::Get().Take(cc_, it->second);
    }
    // The first hook of the call: nothing else touches the state yet. It
    // is written here and published by the release store of started_ (the
    // other hooks and the destructor acquire it first).
    observer_.Start(method_, ctx.has_value() ? &*ctx : nullptr);
    if (!ctx.has_value()) {
      started_.store(true, std::memory_order_release);
      return false;
    }
    // Made under a server call's Context: recorded in that call's ledger.
    std::shared_ptr<internal::CallLedger> ledger =
        internal::ServerCall::LedgerOf(*ctx);
    LedgerRecorder::OutboundId ledger_id = -1;
    if (ledger != nullptr) {
      ledger_id = ledger->OutboundStarted(method_, BudgetGiven());
      if (ledger->forward()) {
        metadata.emplace(internal::kLedgerRequestHeader,
                         internal::kLedgerRequestAlways);
      }
    }
    if (ctx->IsDone()) {
      failure_ = ContextEndStatus(*ctx);
      failed_.store(true, std::memory_order_release);
      ledger_ = std::move(ledger);
      ledger_id_ = ledger_id;
      started_.store(true, std::memory_order_release);
      return true;
    }
    grpc::ClientContext* cc = cc_;
    const metrics::ClientMethodMetrics* m = observer_.metrics();
    // Embedded in this object (no allocation per call); FinishCall stops
    // it, and started_ publishes it to that hook.
    cancel_on_done_.Start(*ctx, [cc, m] {
      cc->TryCancel();
      internal::ClientCallObserver::CancelSent(m);
    });
    ctx_ = std::move(ctx);
    ledger_ = std::move(ledger);
    ledger_id_ = ledger_id;
    started_.store(true, std::memory_order_release);
    return false;
  }

  // The budget this call was given: its deadline from now (nullopt: none).
  std::optional<absl::Duration> BudgetGiven() const {
    const std::chrono::system_clock::time_point d = cc_->deadline();
    if (d == std::chrono::system_clock::time_point::max()) return std::nullopt;
    return absl::FromChrono(d) - absl::Now();
  }

  // Records the call's end in the server call's ledger: its code, whether it
  // was sent, and the ledger the callee returned (its status's details, or
  // for an OK status asked to return one, the trailer), validated and
  // bounded by DecodeLedgerDetails; anything it rejects is ignored. A sent,
  // failed call that returned none records its callee's address (`cc`'s
  // peer), so the caller's ledger can name the link its time went on.
  static void RecordOutbound(
      internal::CallLedger& ledger, LedgerRecorder::OutboundId id, int code,
      bool sent, const grpc::ClientContext& cc, const grpc::Status* status,
      const std::multimap<grpc::string_ref, grpc::string_ref>* trailers) {
    std::optional<LedgerHop> child;
    // grpc::Status::error_details() returns a copy: kept here.
    const std::string status_details =
        status != nullptr ? status->error_details() : std::string();
    std::string_view details = status_details;
    if (details.empty() && code == 0 && ledger.forward() && trailers != nullptr) {
      auto it = trailers->find(grpc::string_ref(kStatusDetailsKey.data(),
                                                kStatusDetailsKey.size()));
      if (it != trailers->end()) {
        details = std::string_view(it->second.data(), it->second.size());
      }
    }
    if (sent && !details.empty()) {
      if (absl::StatusOr<Ledger> l = DecodeLedgerDetails(details); l.ok()) {
        child = std::move(l->root);
      }
    }
    std::string peer;
    // Only at the status hook (status set): the destructor's call may run
    // inside the ClientContext's own destruction.
    if (status != nullptr && sent && code != 0 && !child.has_value()) {
      peer = cc.peer();
    }
    ledger.OutboundEnded(id, code, sent, std::move(child), peer);
  }

  // Drops the cancel registration (waiting for a TryCancel in progress) and
  // reports a call ctx ended as ContextEndStatus does: a cancel caused by
  // ctx's deadline as DEADLINE_EXCEEDED, the message naming ctx's cause.
  // Runs once (the status hook, or the destructor of a call whose status
  // was never received); no lock.
  void FinishCall(
      grpc::Status* status,
      const std::multimap<grpc::string_ref, grpc::string_ref>* trailers) {
    // The destructor after the status hook (as gRPC orders them): nothing
    // left; the acquire orders that hook's writes before the destruction.
    if (finished_.exchange(true, std::memory_order_acq_rel)) {
      (void)finish_done_.load(std::memory_order_acquire);
      return;
    }
    // What StartCall wrote (if it ran: else the state is as constructed),
    // and a hijacked call's status, written by the PRE_RECV_STATUS hook.
    (void)started_.load(std::memory_order_acquire);
    (void)hijack_status_set_.load(std::memory_order_acquire);
    std::optional<Context> ctx = std::exchange(ctx_, std::nullopt);
    // Ended by ctx (its cancel sent, or the deadline gRPC enforced for it):
    // ctx's code, the message naming its cause.
    const CauseKind cause = status != nullptr && ctx.has_value()
                                ? EndedByContext(*ctx, *status)
                                : CauseKind::kNone;
    // No status ever received (the call was abandoned): counted CANCELLED.
    observer_.Finish(status != nullptr
                         ? static_cast<int>(status->error_code())
                         : static_cast<int>(grpc::CANCELLED),
                     cause);
    // Stops f, or waits for a TryCancel in progress (a no-op if StartCall
    // never armed it).
    cancel_on_done_.StopAndWait();
    // In the ledger of the server call it was made under, with what the
    // callee returned.
    if (std::shared_ptr<internal::CallLedger> ledger = std::move(ledger_)) {
      RecordOutbound(*ledger, ledger_id_,
                     status != nullptr ? static_cast<int>(status->error_code())
                                       : static_cast<int>(grpc::CANCELLED),
                     /*sent=*/!failure_.has_value(), *cc_, status, trailers);
    }
    finish_done_.store(true, std::memory_order_release);
  }

  // A call's `status` when `ctx` ended it: CANCELLED with ctx done (its
  // cancel was sent), or DEADLINE_EXCEEDED with ctx done by its deadline or
  // -- before ctx's own timer fires -- past the call's gRPC deadline, which
  // NewClientContext set a little earlier than ctx's (then only for a
  // deadline of ctx's with a reqctx cause). A cancel that was ctx's
  // deadline becomes DEADLINE_EXCEEDED; the message names ctx's cause
  // (CauseDescription) when it has one of ledger/causes.h, else is left (or
  // is Err()'s, for a code changed). Any other status is left alone.
  // Allocates only for a message it writes. Returns the cause named (kNone
  // if none).
  CauseKind EndedByContext(const Context& ctx, grpc::Status& status) const {
    grpc::StatusCode code = status.error_code();
    if (code != grpc::StatusCode::CANCELLED &&
        code != grpc::StatusCode::DEADLINE_EXCEEDED) {
      return CauseKind::kNone;
    }
    absl::Status cause;
    if (ctx.IsDone()) {
      const bool by_deadline =
          ctx.Err().code() == absl::StatusCode::kDeadlineExceeded;
      if (code == grpc::StatusCode::DEADLINE_EXCEEDED && !by_deadline) {
        return CauseKind::kNone;
      }
      if (by_deadline) code = grpc::StatusCode::DEADLINE_EXCEEDED;
      cause = Cause(ctx);
    } else {
      if (code != grpc::StatusCode::DEADLINE_EXCEEDED ||
          std::chrono::system_clock::now() < cc_->deadline()) {
        return CauseKind::kNone;
      }
      cause = internal::DeadlineCause(ctx);
    }
    std::string why = CauseDescription(cause);
    if (why.empty()) {
      // No cause of reqctx's: a cancel that was ctx's deadline still says so.
      if (code != status.error_code()) status = ToGrpcStatus(ctx.Err());
      return CauseKind::kNone;
    }
    status = grpc::Status(code, std::move(why));
    return CauseOf(cause);
  }

  // Set if the call was hijacked: the status it fails with.
  // Asked on every hook of every call: the flag spares the lock and the
  // optional<Status> copy for the calls that were not hijacked (nearly all).
  std::optional<grpc::Status> Failure() {
    if (!failed_.load(std::memory_order_acquire)) return std::nullopt;
    return failure_;  // Written once, before failed_ was set.
  }

  grpc::ClientContext* const cc_;
  const char* const method_;  // gRPC's, valid for the call.
  const size_t header_budget_;

  // Batches of one call may be intercepted on different threads, ordered by
  // gRPC core (which TSan cannot see). The hooks of one call never run at
  // once, so no lock: each hand-over is an atomic TSan can see. StartCall
  // (the first hook) writes failure_, ctx_, cancel_on_done_ and observer_,
  // then sets started_ (release); failure_ is also published by failed_.
  // (StartCall also writes ledger_ and ledger_id_.)
  // FinishCall (once: finished_) acquires started_, then sets finish_done_
  // (release) when done, which the destructor acquires.
  std::optional<grpc::Status> failure_;  // Set before failed_.
  std::atomic<bool> failed_{false};      // failure_ is set.
  std::atomic<bool> started_{false};     // StartCall has run.
  std::atomic<bool> finished_{false};    // FinishCall has started.
  std::atomic<bool> finish_done_{false};  // FinishCall has returned.
  // A hijacked call's status is written (PRE_RECV_STATUS).
  std::atomic<bool> hijack_status_set_{false};
  std::optional<Context> ctx_;      // Written by StartCall only.
  // Armed by StartCall, stopped by FinishCall (thread-safe itself).
  internal::AfterFuncCore cancel_on_done_;
  // The ledger of the server call this call was made under, if any, and
  // this call's entry in it: written by StartCall, taken by FinishCall.
  std::shared_ptr<internal::CallLedger> ledger_;
  LedgerRecorder::OutboundId ledger_id_ = -1;
  internal::ClientCallObserver observer_;  // Started by StartCall.
};

class ClientInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit ClientInterceptorFactory(ClientInterceptorOptions options)
      : options_(options) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo* info) override {
    return new ClientCallInterceptor(info, options_.propagation_header_budget);
  }

 private:
  const ClientInterceptorOptions options_;
};

std::shared_ptr<grpc::Channel> ChannelWith(
    std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
        factory,
    const std::string& target,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const grpc::ChannelArguments& args) {
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      factories;
  factories.push_back(std::move(factory));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, creds, args, std::move(factories));
}

}  // namespace

absl::Status ValidateClientInterceptorOptions(
    const ClientInterceptorOptions& options) {
  const size_t budget = options.propagation_header_budget;
  if (budget < kMinPropagationHeaderBudget ||
      budget > kMaxPropagationHeaderBudget) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ClientInterceptorOptions.propagation_header_budget must be in [",
        kMinPropagationHeaderBudget, ", ", kMaxPropagationHeaderBudget,
        "], got ", budget));
  }
  return absl::OkStatus();
}

std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>
MakeClientInterceptorFactory() {
  return std::make_unique<ClientInterceptorFactory>(ClientInterceptorOptions{});
}

absl::StatusOr<
    std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
MakeClientInterceptorFactoryWithOptions(ClientInterceptorOptions options) {
  if (absl::Status s = ValidateClientInterceptorOptions(options); !s.ok()) {
    return s;
  }
  return std::unique_ptr<
      grpc::experimental::ClientInterceptorFactoryInterface>(
      std::make_unique<ClientInterceptorFactory>(options));
}

std::shared_ptr<grpc::Channel> CreateChannel(
    const std::string& target,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    const grpc::ChannelArguments& args) {
  return ChannelWith(MakeClientInterceptorFactory(), target, creds, args);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> CreateChannelWithOptions(
    const std::string& target,
    const std::shared_ptr<grpc::ChannelCredentials>& creds,
    ClientInterceptorOptions options, const grpc::ChannelArguments& args) {
  auto factory = MakeClientInterceptorFactoryWithOptions(options);
  if (!factory.ok()) return factory.status();
  return ChannelWith(std::move(*factory), target, creds, args);
}

std::unique_ptr<grpc::ClientContext> NewClientContext(const Context& ctx) {
  auto cc = std::make_unique<grpc::ClientContext>();
  // The time left on the monotonic clock, from now: a step of the system
  // clock since the deadline was set does not move the outbound one. Less
  // what gRPC's grpc-timeout encoding rounds up, so the next hop's deadline
  // is never later than ctx's (internal/grpc_timeout.h).
  if (std::optional<absl::Duration> left = ctx.TimeLeft()) {
    const absl::Duration timeout = internal::OutboundGrpcTimeout(*left);
    cc->set_deadline(timeout == absl::InfiniteDuration()
                         ? std::chrono::system_clock::time_point::max()
                         : std::chrono::system_clock::now() +
                               std::chrono::duration_cast<
                                   std::chrono::system_clock::duration>(
                                   absl::ToChronoNanoseconds(std::clamp(
                                       timeout, absl::ZeroDuration(),
                                       absl::Hours(24 * 365 * 100)))));
  }
  // Written into this thread's string, which AddMetadata copies: the header
  // costs the ClientContext's own copy only.
  thread_local std::string traceparent;
  internal::WriteOutgoingTraceparent(ctx, &traceparent);
  static const std::string kTraceparentKey = internal::kTraceparentHeader;
  cc->AddMetadata(kTraceparentKey, traceparent);
  if (const std::string* tracestate = internal::GetTracestate(ctx)) {
    cc->AddMetadata(internal::kTracestateHeader, *tracestate);
  }
  if (std::string baggage = BaggageHeaderFor(ctx); !baggage.empty()) {
    cc->AddMetadata(kBaggageHeader, baggage);
  }
  ClientBindingRegistry::Get().Bind(cc.get(), ctx, traceparent);
  return cc;
}

}  // namespace reqctx
