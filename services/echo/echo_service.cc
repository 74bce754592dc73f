#include "services/echo/echo_service.h"

#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <string>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/group.h"
#include "context/sleep.h"
#include "interceptors/interceptors.h"

namespace reqctx::echo {
namespace {

using ::echo::v1::EchoRequest;
using ::echo::v1::EchoResponse;
using ::echo::v1::Hop;

// Work happens in slices, as real work checks its Context between steps;
// each slice is a SleepFor that a done Context cuts short at once.
constexpr absl::Duration kWorkSlice = absl::Milliseconds(10);
constexpr absl::Duration kDefaultStreamInterval = absl::Milliseconds(100);

absl::Status CheckWork(int64_t work_ms, int64_t max_work_ms) {
  if (work_ms < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("work_ms must be >= 0, got ", work_ms));
  }
  if (work_ms > max_work_ms) {
    return absl::InvalidArgumentError(
        absl::StrCat("work_ms ", work_ms, " exceeds this server's limit of ",
                     max_work_ms, " (--max_work_ms)"));
  }
  return absl::OkStatus();
}

absl::Status SimulateWork(const Context& ctx, absl::Duration work) {
  // Against an end time on the monotonic clock, so the slices' wake-up
  // delays do not add up: `work` takes `work`, even on a loaded machine.
  const auto end = std::chrono::steady_clock::now() +
                   absl::ToChronoNanoseconds(work);
  for (;;) {
    const absl::Duration left =
        absl::FromChrono(end - std::chrono::steady_clock::now());
    if (left <= absl::ZeroDuration()) break;
    if (absl::Status s = SleepFor(ctx, std::min(left, kWorkSlice)); !s.ok()) {
      return s;
    }
  }
  return ctx.Err();
}

// The client went away mid-stream (a Write failed). Say why: the glue
// cancels the call's Context promptly when the client cancels, and when the
// cancel is really the caller's deadline it lets this call's own deadline
// fire instead, within the grpc-timeout rounding (up to ~1% of the timeout;
// see interceptors/server_interceptor.h). Wait for that (bounded by the
// deadline, at most an hour away, plus a second) rather than guess, so a
// stream cut by its deadline counts as deadline-exceeded.
absl::Status WhyClientLeft(const Context& ctx) {
  absl::Duration bound = absl::Seconds(1);
  if (std::optional<absl::Time> deadline = ctx.Deadline()) {
    bound += std::clamp(*deadline - absl::Now(), absl::ZeroDuration(),
                        absl::Hours(1));
  }
  if (ctx.Done().WaitFor(bound)) return ctx.Err();
  return absl::CancelledError("stream closed by the client");
}

// Why a Read from the caller returned false: OK for its half-close; the
// Context's error when the call was canceled (client cancel, deadline,
// shutdown). gRPC's sync Read says neither, so ask the call: a cancel that
// ends the Read is seen by IsCancelled() as it completes (and by the
// Context within the glue's poll interval).
absl::Status InboundEnded(const Context& ctx, grpc::ServerContext* sc) {
  if (ctx.IsDone()) return ctx.Err();
  if (sc->IsCancelled()) return WhyClientLeft(ctx);
  return absl::OkStatus();
}

// Chat relay: what the request worker (reading the caller, writing the next
// hop) is doing, for the handler thread (relaying responses up) to stop it.
// Thread-safe.
class RequestReader {
 public:
  // Before each Read of the caller: false once Stop() was called.
  bool BeginRead() {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return false;
    reading_ = true;
    return true;
  }
  void EndRead() { Set(&reading_, false); }
  // The worker is done with the caller's stream.
  void Done() { Set(&done_, true); }

  // The next hop's response stream ended first (an error: it ends OK only
  // after the worker's half-close), and the worker may wait in a Read of the
  // caller's next request, which a sync handler cannot return during. Stops
  // the worker at its next request. If it is reading: when the Context is
  // done (deadline, cancel), gRPC ends the Read itself at the call's end,
  // and the caller then sees its real status: wait for that, within a
  // second; otherwise (or past the bound) cancel the call (the caller sees
  // CANCELLED) rather than wait on a silent caller.
  void Stop(const Context& ctx, grpc::ServerContext* sc) {
    std::unique_lock<std::mutex> lock(mu_);
    stopped_ = true;
    if (done_ || !reading_) return;
    if (ctx.IsDone()) {
      changed_.wait_for(lock, std::chrono::seconds(1),
                        [&] { return done_ || !reading_; });
    }
    if (reading_) sc->TryCancel();
  }

 private:
  void Set(bool* flag, bool value) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      *flag = value;
    }
    changed_.notify_all();
  }

  std::mutex mu_;
  std::condition_variable changed_;
  bool reading_ = false;  // Guarded by mu_.
  bool stopped_ = false;  // Guarded by mu_.
  bool done_ = false;     // Guarded by mu_.
};

// `in` relayed up through `hop`: `hop` first, then the next hops'.
EchoResponse Prepend(const Hop& hop, EchoResponse in) {
  EchoResponse out;
  out.set_message(std::move(*in.mutable_message()));
  out.set_trace_id(hop.trace_id());
  *out.add_hops() = hop;
  for (Hop& h : *in.mutable_hops()) *out.add_hops() = std::move(h);
  return out;
}

// Counts one call as active for its lifetime and records how it ended.
class RequestScope {
 public:
  RequestScope(EchoStats& stats, const Context& ctx) : stats_(stats), ctx_(ctx) {
    stats_.RequestStarted();
  }
  ~RequestScope() { stats_.RequestFinished(ctx_, result_); }
  void set_result(absl::Status result) { result_ = std::move(result); }

 private:
  EchoStats& stats_;
  const Context& ctx_;
  absl::Status result_;
};

// The channel to options.next, with options.next_channel if valid.
std::shared_ptr<grpc::Channel> NextChannel(const EchoServiceOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      CreateChannelWithOptions(options.next, grpc::InsecureChannelCredentials(),
                               options.next_channel);
  if (channel.ok()) return *std::move(channel);
  return reqctx::CreateChannel(options.next,
                               grpc::InsecureChannelCredentials());
}

std::unique_ptr<postgres::Pool> MakePool(const EchoServiceOptions& options,
                                         absl::Status* status) {
  if (options.postgres.empty()) return nullptr;
  absl::StatusOr<std::unique_ptr<postgres::Pool>> pool =
      postgres::Pool::New(options.postgres, options.postgres_pool);
  if (!pool.ok()) {
    *status = pool.status();
    return nullptr;
  }
  return *std::move(pool);
}

}  // namespace

EchoService::EchoService(EchoServiceOptions options)
    : options_(std::move(options)),
      next_(options_.next.empty()
                ? nullptr
                : ::echo::v1::Echo::NewStub(NextChannel(options_))),
      postgres_(MakePool(options_, &postgres_status_)),
      server_policy_(options_.server_policy),
      retry_state_(options_.retry_channel) {}

bool EchoServiceOptions::ServerPolicyOn(const policy::ServerPolicyOptions& o) {
  auto on = [](const policy::MethodPolicy& p) {
    return p.min_budget > absl::ZeroDuration() ||
           p.learned_min_budget_quantile > 0 ||
           p.reply_margin > absl::ZeroDuration() ||
           p.default_deadline.has_value() || p.max_deadline.has_value() ||
           p.max_concurrency > 0;
  };
  if (on(o.defaults)) return true;
  for (const auto& [name, p] : o.methods) {
    if (on(p)) return true;
  }
  return false;
}

policy::PolicyCountersSnapshot EchoService::PolicyCounts() const {
  policy::PolicyCountersSnapshot a = server_policy_.Counters();
  policy::PolicyCountersSnapshot b = retry_state_.Counters();
  for (size_t i = 0; i < a.values.size(); ++i) a.values[i] += b.values[i];
  return a;
}

Hop EchoService::ArrivalHop(const Context& ctx) const {
  Hop hop;
  hop.set_service(options_.name);
  if (std::optional<TraceContext> tc = GetTraceContext(ctx)) {
    hop.set_trace_id(tc->trace_id);
    hop.set_span_id(tc->span_id);
  }
  int64_t remaining_ms = -1;
  if (std::optional<absl::Time> deadline = ctx.Deadline()) {
    remaining_ms = std::max<int64_t>(
        0, absl::ToInt64Milliseconds(*deadline - absl::Now()));
  }
  hop.set_deadline_remaining_ms(remaining_ms);
  return hop;
}

absl::Status EchoService::RunWorkers(const Context& ctx, absl::Duration work) {
  if (work <= absl::ZeroDuration()) return ctx.Err();
  Group group(ctx);
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    group.Go([this, work](const Context& worker_ctx) {
      stats_.WorkerStarted();
      absl::Status s = SimulateWork(worker_ctx, work);
      stats_.WorkerFinished();
      return s;
    });
  }
  return group.Wait();
}

absl::Status EchoService::QueryWork(const Context& ctx, int64_t work_ms) {
  if (work_ms <= 0) return ctx.Err();
  if (postgres_ == nullptr) return DatabaseError(ctx, postgres_status_);
  stats_.WorkerStarted();  // The query is this call's one worker.
  absl::StatusOr<postgres::Result> r = postgres_->Query(
      ctx, "SELECT pg_sleep($1::float8 / 1000.0)", {std::to_string(work_ms)});
  stats_.WorkerFinished();
  return DatabaseError(ctx, r.status());
}

absl::Status EchoService::DatabaseError(const Context& ctx,
                                        const absl::Status& s) const {
  if (s.ok()) return s;
  // The Context's own end is the client's business: its code as it is.
  if (const absl::Status done = ctx.Err(); !done.ok() && s.code() == done.code()) {
    return s;
  }
  const bool unknown = postgres::IsOutcomeUnknown(s);
  const std::string line = absl::StrCat(
      options_.name, ": database: ", postgres::RedactSecrets(s.ToString()));
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  return unknown ? absl::UnknownError("database outcome unknown")
                 : absl::UnavailableError("database unavailable");
}

grpc::Status EchoService::Echo(grpc::ServerContext* sc,
                               const EchoRequest* request,
                               EchoResponse* response) {
  Context ctx = FromServerContext(sc);
  Hop hop = ArrivalHop(ctx);
  RequestScope scope(stats_, ctx);
  absl::Status s = CheckWork(request->work_ms(), options_.max_work_ms);
  if (s.ok() && options_.before_work) options_.before_work(ctx);
  if (s.ok()) {
    s = postgres_ != nullptr
            ? QueryWork(ctx, request->work_ms())
            : RunWorkers(ctx, absl::Milliseconds(request->work_ms()));
  }
  EchoResponse downstream;
  if (s.ok() && next_ != nullptr) {
    if (options_.retry.max_attempts > 1 ||
        options_.retry.hedging_delay.has_value()) {
      auto out = policy::CallWithRetry<EchoResponse>(
          ctx, options_.retry, &retry_state_,
          [&](grpc::ClientContext* cc, EchoResponse* r) {
            return next_->Echo(cc, *request, r);
          });
      s = FromGrpcStatus(out.status);
      downstream = std::move(out.response);
    } else {
      std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
      policy::PropagateCriticality(ctx, cc.get());
      s = FromGrpcStatus(next_->Echo(cc.get(), *request, &downstream));
    }
  }
  scope.set_result(s);
  if (!s.ok()) return ToGrpcStatus(s);
  response->set_message(request->message());
  response->set_trace_id(hop.trace_id());
  *response->add_hops() = std::move(hop);
  for (Hop& h : *downstream.mutable_hops()) *response->add_hops() = std::move(h);
  return grpc::Status::OK;
}

absl::Status EchoService::GenerateStream(
    const Context& ctx, const Hop& hop, const EchoRequest& request,
    grpc::ServerWriter<EchoResponse>* writer) {
  absl::Duration interval = request.work_ms() > 0
                                ? absl::Milliseconds(request.work_ms())
                                : kDefaultStreamInterval;
  for (int64_t n = 1;; ++n) {
    if (absl::Status s = SleepFor(ctx, interval); !s.ok()) return s;
    EchoResponse response;
    response.set_message(absl::StrCat(request.message(), " #", n));
    response.set_trace_id(hop.trace_id());
    *response.add_hops() = hop;
    if (!writer->Write(response)) return WhyClientLeft(ctx);
  }
}

absl::Status EchoService::RelayStream(const Context& ctx, const Hop& hop,
                                      const EchoRequest& request,
                                      grpc::ServerWriter<EchoResponse>* writer) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  policy::PropagateCriticality(ctx, cc.get());
  std::unique_ptr<grpc::ClientReader<EchoResponse>> reader =
      next_->EchoStream(cc.get(), request);
  EchoResponse in;
  bool client_gone = false;
  while (reader->Read(&in)) {
    EchoResponse out;
    out.set_message(in.message());
    out.set_trace_id(hop.trace_id());
    *out.add_hops() = hop;
    for (Hop& h : *in.mutable_hops()) *out.add_hops() = std::move(h);
    if (!writer->Write(out)) {
      client_gone = true;
      cc->TryCancel();  // Don't wait for our Context's cancel to arrive.
      break;
    }
  }
  absl::Status s = FromGrpcStatus(reader->Finish());
  if (client_gone) return WhyClientLeft(ctx);
  return s;
}

grpc::Status EchoService::EchoStream(grpc::ServerContext* sc,
                                     const EchoRequest* request,
                                     grpc::ServerWriter<EchoResponse>* writer) {
  Context ctx = FromServerContext(sc);
  Hop hop = ArrivalHop(ctx);
  RequestScope scope(stats_, ctx);
  absl::Status s = CheckWork(request->work_ms(), options_.max_work_ms);
  if (s.ok()) {
    s = next_ != nullptr ? RelayStream(ctx, hop, *request, writer)
                         : GenerateStream(ctx, hop, *request, writer);
  }
  scope.set_result(s);
  return ToGrpcStatus(s);
}

absl::Status EchoService::RequestWork(const Context& ctx,
                                      const EchoRequest& request) {
  if (absl::Status s = CheckWork(request.work_ms(), options_.max_work_ms);
      !s.ok()) {
    return s;
  }
  return RunWorkers(ctx, absl::Milliseconds(request.work_ms()));
}

absl::Status EchoService::CollectRequests(
    const Context& ctx, grpc::ServerContext* sc,
    grpc::ServerReader<EchoRequest>* reader, Hop* hop, std::string* last,
    EchoResponse* downstream) {
  std::unique_ptr<grpc::ClientContext> cc;
  std::unique_ptr<grpc::ClientWriter<EchoRequest>> next;
  if (next_ != nullptr) {
    cc = NewClientContext(ctx);
    policy::PropagateCriticality(ctx, cc.get());
    next = next_->Collect(cc.get(), downstream);
  }
  EchoRequest request;
  absl::Status s;
  while (true) {
    if (!reader->Read(&request)) {
      s = InboundEnded(ctx, sc);
      break;
    }
    hop->set_messages_received(hop->messages_received() + 1);
    *last = request.message();
    s = RequestWork(ctx, request);
    if (!s.ok()) break;
    // A failed Write: the next hop ended the call; its Finish says why.
    if (next != nullptr && !next->Write(request)) break;
  }
  if (next == nullptr) return s;
  if (s.ok()) {
    next->WritesDone();
  } else {
    cc->TryCancel();  // Never a half-close: the next hop must not answer.
  }
  absl::Status down = FromGrpcStatus(next->Finish());
  return s.ok() ? down : s;
}

grpc::Status EchoService::Collect(grpc::ServerContext* sc,
                                  grpc::ServerReader<EchoRequest>* reader,
                                  EchoResponse* response) {
  Context ctx = FromServerContext(sc);
  Hop hop = ArrivalHop(ctx);
  RequestScope scope(stats_, ctx);
  std::string last;
  EchoResponse downstream;
  absl::Status s =
      CollectRequests(ctx, sc, reader, &hop, &last, &downstream);
  scope.set_result(s);
  if (!s.ok()) return ToGrpcStatus(s);
  downstream.set_message(std::move(last));
  *response = Prepend(hop, std::move(downstream));
  return grpc::Status::OK;
}

absl::Status EchoService::AnswerChat(const Context& ctx,
                                     grpc::ServerContext* sc, const Hop& hop,
                                     ChatStream* stream) {
  EchoRequest request;
  while (stream->Read(&request)) {
    if (absl::Status s = RequestWork(ctx, request); !s.ok()) return s;
    EchoResponse response;
    response.set_message(request.message());
    if (!stream->Write(Prepend(hop, std::move(response)))) {
      return WhyClientLeft(ctx);
    }
  }
  return InboundEnded(ctx, sc);
}

absl::Status EchoService::RelayChat(const Context& ctx,
                                    grpc::ServerContext* sc, const Hop& hop,
                                    ChatStream* stream) {
  std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
  policy::PropagateCriticality(ctx, cc.get());
  std::unique_ptr<grpc::ClientReaderWriter<EchoRequest, EchoResponse>> next =
      next_->Chat(cc.get());
  // Requests go down on a worker; this thread relays the responses up.
  RequestReader requests;
  Group group(ctx);
  group.Go([&](const Context&) {
    stats_.WorkerStarted();
    absl::Status s;
    EchoRequest request;
    while (requests.BeginRead()) {
      const bool got = stream->Read(&request);
      requests.EndRead();
      if (!got) {
        s = InboundEnded(ctx, sc);
        break;
      }
      s = RequestWork(ctx, request);
      // A failed Write: the next hop ended the call; its Finish says why.
      if (!s.ok() || !next->Write(request)) break;
    }
    if (s.ok()) {
      next->WritesDone();
    } else {
      cc->TryCancel();  // Never a half-close: the next hop must not finish.
    }
    stats_.WorkerFinished();
    requests.Done();
    return s;
  });
  EchoResponse in;
  bool client_gone = false;
  while (next->Read(&in)) {
    if (!stream->Write(Prepend(hop, std::move(in)))) {
      client_gone = true;
      cc->TryCancel();
      break;
    }
  }
  if (!client_gone) requests.Stop(ctx, sc);
  const absl::Status up = group.Wait();
  const absl::Status down = FromGrpcStatus(next->Finish());
  if (client_gone) return WhyClientLeft(ctx);
  return up.ok() ? down : up;
}

grpc::Status EchoService::Chat(grpc::ServerContext* sc, ChatStream* stream) {
  Context ctx = FromServerContext(sc);
  Hop hop = ArrivalHop(ctx);
  RequestScope scope(stats_, ctx);
  absl::Status s = next_ != nullptr ? RelayChat(ctx, sc, hop, stream)
                                    : AnswerChat(ctx, sc, hop, stream);
  scope.set_result(s);
  return ToGrpcStatus(s);
}

grpc::Status EchoService::Stats(grpc::ServerContext*,
                                const ::echo::v1::StatsRequest*,
                                ::echo::v1::StatsResponse* response) {
  EchoStats::Snapshot s = stats_.Get();
  response->set_active_requests(s.active_requests);
  response->set_active_workers(s.active_workers);
  response->set_completed_total(s.completed_total);
  response->set_canceled_total(s.canceled_total);
  response->set_deadline_exceeded_total(s.deadline_exceeded_total);
  policy::PolicyCountersSnapshot counts = PolicyCounts();
  for (size_t i = 0; i < policy::kPolicyCounterCount; ++i) {
    if (counts.values[i] == 0) continue;
    (*response->mutable_policy_counts())[std::string(
        policy::PolicyCounterName(static_cast<policy::PolicyCounter>(i)))] =
        counts.values[i];
  }
  return grpc::Status::OK;
}

}  // namespace reqctx::echo
