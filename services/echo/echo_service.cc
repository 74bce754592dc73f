#include "services/echo/echo_service.h"

#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/group.h"
#include "context/sleep.h"
#include "interceptors/interceptors.h"
#include "streams/sync.h"

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

constexpr char kEchoStreamMethod[] = "/echo.v1.Echo/EchoStream";
constexpr char kCollectMethod[] = "/echo.v1.Echo/Collect";
constexpr char kChatMethod[] = "/echo.v1.Echo/Chat";

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
  ~RequestScope() {
    if (!finished_) stats_.RequestFinished(ctx_, result_);
  }
  void set_result(absl::Status result) { result_ = std::move(result); }
  // A stream's handler: counts the call as finished now, by `cut` (the
  // stream's status) if it is an error, else by the Context as it is now
  // (before the stream's Finish releases it) and `result`. The destructor
  // then counts nothing.
  void FinishStream(const absl::Status& cut, const absl::Status& result) {
    if (finished_) return;
    finished_ = true;
    if (!cut.ok()) {
      stats_.RequestEnded(cut);
    } else {
      stats_.RequestFinished(ctx_, result);
    }
  }

 private:
  EchoStats& stats_;
  const Context& ctx_;
  absl::Status result_;
  bool finished_ = false;
};

// What a stream's handler returns, given its own result `s`: counts the call
// (with the stream's Context, before Finish releases it), then the stream's
// status if it was cut (a timeout, the Context), else `s`.
template <typename Stream>
grpc::Status FinishStream(streams::ServerStream<Stream>& stream,
                          RequestScope& scope, const absl::Status& s) {
  stream.guard().CheckCallCancelled();
  scope.FinishStream(stream.guard().status(), s);
  return stream.Finish(ToGrpcStatus(s));
}

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
           policy::SheddingOn(p);
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
    hop.set_trace_id(tc->trace_id.str());
    hop.set_span_id(tc->span_id.str());
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
  // Tracked, so a server shutting down ends it with the cause "server
  // shutting down" (and the client gets UNAVAILABLE, retryable).
  const drain::CallTracker::Call call = calls_.Track(FromServerContext(sc));
  const Context& ctx = call.context();
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
  s = drain::ShutdownStatusOr(ctx, s);
  scope.set_result(s);
  if (!s.ok()) return ToGrpcStatus(s);
  response->set_message(request->message());
  response->set_trace_id(hop.trace_id());
  *response->add_hops() = std::move(hop);
  for (Hop& h : *downstream.mutable_hops()) *response->add_hops() = std::move(h);
  return grpc::Status::OK;
}

absl::Status EchoService::GenerateStream(const Context& ctx, const Hop& hop,
                                         const EchoRequest& request,
                                         EchoStreamWriter& writer) {
  absl::Duration interval = request.work_ms() > 0
                                ? absl::Milliseconds(request.work_ms())
                                : kDefaultStreamInterval;
  for (int64_t n = 1;; ++n) {
    if (absl::Status s = SleepFor(ctx, interval); !s.ok()) return s;
    EchoResponse response;
    response.set_message(absl::StrCat(request.message(), " #", n));
    response.set_trace_id(hop.trace_id());
    *response.add_hops() = hop;
    if (!writer.Write(response)) return WhyClientLeft(ctx);
  }
}

absl::Status EchoService::RelayStream(const Context& ctx, const Hop& hop,
                                      const EchoRequest& request,
                                      EchoStreamWriter& writer) {
  streams::ClientStream next(
      ctx, streams::StreamOptions{},
      [&](grpc::ClientContext* cc) {
        policy::PropagateCriticality(ctx, cc);
        return next_->EchoStream(cc, request);
      },
      kEchoStreamMethod);
  EchoResponse in;
  bool client_gone = false;
  while (next.Read(&in)) {
    if (!writer.Write(Prepend(hop, std::move(in)))) {
      client_gone = true;
      // Don't wait for our Context's cancel to arrive.
      next.guard().Cut(absl::CancelledError("the caller went away"));
      break;
    }
  }
  absl::Status s = FromGrpcStatus(next.Finish());
  if (client_gone) return WhyClientLeft(ctx);
  return s;
}

grpc::Status EchoService::EchoStream(
    grpc::ServerContext* sc, const EchoRequest* request,
    grpc::ServerWriter<EchoResponse>* writer) {
  // Tracked as Echo is: a drain's CancelAll cuts the stream with its cause.
  const drain::CallTracker::Call call = calls_.Track(FromServerContext(sc));
  EchoStreamWriter stream(call.context(), sc, writer,
                          options_.streams.For(kEchoStreamMethod),
                          kEchoStreamMethod);
  const Context& ctx = stream.context();
  Hop hop = ArrivalHop(ctx);
  RequestScope scope(stats_, ctx);
  absl::Status s = CheckWork(request->work_ms(), options_.max_work_ms);
  if (s.ok()) {
    s = next_ != nullptr ? RelayStream(ctx, hop, *request, stream)
                         : GenerateStream(ctx, hop, *request, stream);
  }
  return FinishStream(stream, scope, s);
}

absl::Status EchoService::RequestWork(const Context& ctx,
                                      const EchoRequest& request) {
  if (absl::Status s = CheckWork(request.work_ms(), options_.max_work_ms);
      !s.ok()) {
    return s;
  }
  return RunWorkers(ctx, absl::Milliseconds(request.work_ms()));
}

absl::Status EchoService::CollectRequests(grpc::ServerContext* sc,
                                          CollectReader& reader, Hop* hop,
                                          std::string* last,
                                          EchoResponse* downstream) {
  const Context& ctx = reader.context();
  std::optional<streams::ClientStream<grpc::ClientWriter<EchoRequest>>> next;
  if (next_ != nullptr) {
    next.emplace(
        ctx, streams::StreamOptions{},
        [&](grpc::ClientContext* cc) {
          policy::PropagateCriticality(ctx, cc);
          return next_->Collect(cc, downstream);
        },
        kCollectMethod);
  }
  EchoRequest request;
  absl::Status s;
  while (true) {
    if (!reader.Read(&request)) {
      s = InboundEnded(ctx, sc);
      break;
    }
    hop->set_messages_received(hop->messages_received() + 1);
    *last = request.message();
    s = RequestWork(ctx, request);
    if (!s.ok()) break;
    // A failed Write: the next hop ended the call; its Finish says why.
    if (next.has_value() && !next->Write(request)) break;
  }
  if (!next.has_value()) return s;
  if (s.ok()) {
    next->WritesDone();
  } else {
    next->guard().Cut(s);  // Never a half-close: the next hop must not answer.
  }
  absl::Status down = FromGrpcStatus(next->Finish());
  return s.ok() ? down : s;
}

grpc::Status EchoService::Collect(grpc::ServerContext* sc,
                                  grpc::ServerReader<EchoRequest>* reader,
                                  EchoResponse* response) {
  const drain::CallTracker::Call call = calls_.Track(FromServerContext(sc));
  CollectReader stream(call.context(), sc, reader,
                       options_.streams.For(kCollectMethod), kCollectMethod);
  Hop hop = ArrivalHop(stream.context());
  RequestScope scope(stats_, stream.context());
  std::string last;
  EchoResponse downstream;
  absl::Status s = CollectRequests(sc, stream, &hop, &last, &downstream);
  if (s.ok()) {
    downstream.set_message(std::move(last));
    *response = Prepend(hop, std::move(downstream));
  }
  return FinishStream(stream, scope, s);
}

absl::Status EchoService::AnswerChat(grpc::ServerContext* sc, const Hop& hop,
                                     ChatStream& stream) {
  const Context& ctx = stream.context();
  EchoRequest request;
  while (stream.Read(&request)) {
    if (absl::Status s = RequestWork(ctx, request); !s.ok()) return s;
    EchoResponse response;
    response.set_message(request.message());
    if (!stream.Write(Prepend(hop, std::move(response)))) {
      return WhyClientLeft(ctx);
    }
  }
  return InboundEnded(ctx, sc);
}

absl::Status EchoService::RelayChat(grpc::ServerContext* sc, const Hop& hop,
                                    ChatStream& stream) {
  const Context& ctx = stream.context();
  streams::ClientStream next(
      ctx, streams::StreamOptions{},
      [&](grpc::ClientContext* cc) {
        policy::PropagateCriticality(ctx, cc);
        return next_->Chat(cc);
      },
      kChatMethod);
  // Requests go down on a worker while this thread relays the responses
  // up. `next` is shared: the worker writes to it under `next_mu` until
  // `requests_done`, then the handler alone finishes it.
  std::mutex next_mu;
  bool requests_done = false;  // Guarded by next_mu.
  Group group(ctx);
  group.Go([&](const Context&) {
    stats_.WorkerStarted();
    absl::Status s;
    EchoRequest request;
    while (true) {
      if (!stream.Read(&request)) {
        s = InboundEnded(ctx, sc);
        break;
      }
      s = RequestWork(ctx, request);
      if (!s.ok()) break;
      std::lock_guard<std::mutex> lock(next_mu);
      // A failed Write: the next hop ended the call; its Finish says why.
      if (requests_done || !next.Write(request)) break;
    }
    {
      std::lock_guard<std::mutex> lock(next_mu);
      if (!requests_done) {
        requests_done = true;
        if (s.ok()) {
          next.WritesDone();
        } else {
          next.guard().Cut(s);  // Never a half-close: no OK from the next hop.
        }
      }
    }
    stats_.WorkerFinished();
    return s;
  });
  EchoResponse in;
  bool client_gone = false;
  while (next.Read(&in)) {
    if (!stream.Write(Prepend(hop, std::move(in)))) {
      client_gone = true;
      next.guard().Cut(absl::CancelledError("the caller went away"));
      break;
    }
  }
  bool next_ended_first = false;
  {
    std::lock_guard<std::mutex> lock(next_mu);
    next_ended_first = !requests_done && !client_gone;
    requests_done = true;
  }
  const absl::Status down = FromGrpcStatus(next.Finish());
  if (next_ended_first) {
    // The next hop ended first (an error: it ends OK only after our
    // half-close) while the worker may wait for the caller's next request,
    // which a sync handler cannot return during. Its deadline is ours less
    // grpc-timeout's rounding: for DEADLINE_EXCEEDED, let ours end the
    // stream (bounded), so the caller sees that. Otherwise cut the stream,
    // which ends the Read (the caller sees CANCELLED with the next hop's
    // message).
    if (down.code() == absl::StatusCode::kDeadlineExceeded) {
      (void)WhyClientLeft(ctx);
    }
    stream.guard().Cut(
        down.ok() ? absl::CancelledError(
                        "reqctx echo: the next hop ended the stream first")
                  : down);
  }
  const absl::Status up = group.Wait();
  if (client_gone) return WhyClientLeft(ctx);
  return up.ok() ? down : up;
}

grpc::Status EchoService::Chat(
    grpc::ServerContext* sc,
    grpc::ServerReaderWriter<EchoResponse, EchoRequest>* raw) {
  const drain::CallTracker::Call call = calls_.Track(FromServerContext(sc));
  ChatStream stream(call.context(), sc, raw, options_.streams.For(kChatMethod),
                    kChatMethod);
  Hop hop = ArrivalHop(stream.context());
  RequestScope scope(stats_, stream.context());
  absl::Status s = next_ != nullptr ? RelayChat(sc, hop, stream)
                                    : AnswerChat(sc, hop, stream);
  return FinishStream(stream, scope, s);
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
