// Streams bound to a Context (issue 22, //streams): every API (sync,
// callback, completion-queue) x every stream kind (server-, client-,
// bidi-streaming), on both sides of a real call over 127.0.0.1:
//   * a client cancel mid-stream ends the handler (CANCELLED) and its
//     worker (an AfterFunc on the stream's Context);
//   * the caller's deadline ends a stream mid-way (DEADLINE_EXCEEDED on both
//     sides);
//   * a peer that stops sending is cut at the reader's message-wait timeout,
//     with a status saying so and after how many messages;
//   * a peer that stops reading (flow control full, 256 KiB messages) ends
//     the writer's blocked Write at its idle timeout;
// and after each case no guard, server call or timer is left.
//
// The handler and client logic is written once, over small "ops"
// interfaces; each API implements them with its own bound wrappers
// (streams/sync.h, streams/callback.h, streams/async_cq.h). Callback and
// completion-queue handlers run that logic on a thread per call, waiting
// for each operation's completion (a test harness; the wrappers under test
// are the same a reactor or a queue loop uses).
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/core.h"
#include "context/debug.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/interceptors.h"
#include "streams/async_cq.h"
#include "streams/callback.h"
#include "streams/stream_guard.h"
#include "streams/sync.h"
#include "tests/process_probe.h"
#include "tests/stream_test.grpc.pb.h"
#include "tests/test_timing.h"

namespace reqctx::streams {
namespace {

using ::reqctx::streamtest::Msg;
using ::reqctx::streamtest::StreamTest;
using ::reqctx::testing::PlainOrSanitized;

const absl::Duration kWait = PlainOrSanitized(absl::Milliseconds(200),
                                              absl::Milliseconds(600));
const absl::Duration kIdle = PlainOrSanitized(absl::Milliseconds(300),
                                              absl::Milliseconds(900));
const absl::Duration kDeadline = PlainOrSanitized(absl::Milliseconds(600),
                                                  absl::Milliseconds(1800));
// Every wait in the harness is bounded by this.
const absl::Duration kBound = absl::Seconds(30);
constexpr int kBigSize = 256 * 1024;
constexpr int kMaxBigWrites = 2000;  // 500 MiB: far past any window.

enum class Api { kSync, kCallback, kAsync };
enum class Kind { kDown, kUp, kBidi };

const char* ApiName(Api a) {
  switch (a) {
    case Api::kSync: return "Sync";
    case Api::kCallback: return "Callback";
    case Api::kAsync: return "Async";
  }
  return "?";
}
const char* KindName(Kind k) {
  switch (k) {
    case Kind::kDown: return "ServerStreaming";
    case Kind::kUp: return "ClientStreaming";
    case Kind::kBidi: return "Bidi";
  }
  return "?";
}
std::string MethodOf(Kind k) {
  switch (k) {
    case Kind::kDown: return "/reqctx.streamtest.StreamTest/Down";
    case Kind::kUp: return "/reqctx.streamtest.StreamTest/Up";
    case Kind::kBidi: return "/reqctx.streamtest.StreamTest/Bidi";
  }
  return "";
}

Msg Sized(int size) {
  Msg m;
  m.set_payload(std::string(static_cast<size_t>(size), 'x'));
  return m;
}

// ---------------------------------------------------------------------------
// Server side: what the handler does is told by the client's metadata.
//   x-mode: "normal" | "stall" (Down: stop writing after `count`; Up: read
//           everything, never answer) |
//           "noread" (Up: never read; Bidi: write big messages, never read)
//   x-wait-ms, x-idle-ms: the handler's StreamOptions.

struct ServerScript {
  std::string mode = "normal";
  StreamOptions options;
};

std::string Meta(const grpc::ServerContextBase& sc, const std::string& key) {
  auto it = sc.client_metadata().find(key);
  if (it == sc.client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

ServerScript ScriptOf(const grpc::ServerContextBase& sc) {
  ServerScript s;
  if (std::string m = Meta(sc, "x-mode"); !m.empty()) s.mode = m;
  if (std::string w = Meta(sc, "x-wait-ms"); !w.empty()) {
    s.options.message_wait = absl::Milliseconds(std::stoi(w));
  }
  if (std::string i = Meta(sc, "x-idle-ms"); !i.empty()) {
    s.options.idle = absl::Milliseconds(std::stoi(i));
  }
  return s;
}

// What one handler saw.
struct ServerResult {
  Kind kind = Kind::kDown;
  grpc::Status status;  // What it sent (FinalStatus).
  uint64_t in = 0;
  uint64_t out = 0;
  absl::Status worker;  // Cause(stream context) as its worker saw it.
};

class Results {
 public:
  void Add(ServerResult r) {
    std::lock_guard<std::mutex> lock(mu_);
    results_.push_back(std::move(r));
    cv_.notify_all();
  }
  std::optional<ServerResult> Next() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, absl::ToChronoSeconds(kBound),
                      [&] { return !results_.empty(); })) {
      return std::nullopt;
    }
    ServerResult r = std::move(results_.front());
    results_.erase(results_.begin());
    return r;
  }
  void Clear() {
    std::lock_guard<std::mutex> lock(mu_);
    results_.clear();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ServerResult> results_;
};

Results& ServerResults() {
  static auto* r = new Results();
  return *r;
}

// One handler's operations, implemented per API.
class ServerOps {
 public:
  virtual ~ServerOps() = default;
  virtual bool Read(Msg* m) = 0;
  virtual bool Write(const Msg& m) = 0;
  // Sends the status (with `response` for Up); returns what was sent.
  virtual grpc::Status Finish(const grpc::Status& s, const Msg& response) = 0;
  virtual StreamGuard& guard() = 0;
  // Waits (bounded) until the stream's Context is done.
  virtual void WaitForCut() {
    guard().context().Done().WaitFor(kBound);
  }
};

// The handler's logic, the same on every API.
void RunHandler(Kind kind, const ServerScript& script, const Msg& request,
                ServerOps& ops) {
  ServerResult result;
  result.kind = kind;
  // The handler's worker: stops when the stream's Context is done.
  std::mutex wmu;
  std::condition_variable wcv;
  bool worker_done = false;
  const Context ctx = ops.guard().context();
  AfterFuncHandle worker = AfterFunc(ctx, [&] {
    std::lock_guard<std::mutex> lock(wmu);
    result.worker = Cause(ctx);
    worker_done = true;
    wcv.notify_all();
  });
  Msg response;
  switch (kind) {
    case Kind::kDown:
      for (int i = 0; i < request.count(); ++i) {
        if (!ops.Write(Sized(request.size()))) break;
      }
      if (script.mode == "stall") ops.WaitForCut();
      break;
    case Kind::kUp:
      if (script.mode == "noread") {
        ops.WaitForCut();
      } else {
        Msg m;
        int n = 0;
        while (ops.Read(&m)) ++n;
        response.set_count(n);
        // Read everything, then never answer.
        if (script.mode == "stall") ops.WaitForCut();
      }
      break;
    case Kind::kBidi:
      if (script.mode == "noread") {
        for (int i = 0; i < kMaxBigWrites; ++i) {
          if (!ops.Write(Sized(kBigSize))) break;
        }
      } else {
        Msg m;
        while (ops.Read(&m)) {
          if (!ops.Write(Sized(m.size()))) break;
        }
      }
      break;
  }
  result.status = ops.Finish(grpc::Status::OK, response);
  StreamStats st = ops.guard().stats();
  result.in = st.messages_in;
  result.out = st.messages_out;
  {
    // Finish ended the guard, which released the Context: the worker ran.
    std::unique_lock<std::mutex> lock(wmu);
    wcv.wait_for(lock, absl::ToChronoSeconds(kBound),
                 [&] { return worker_done; });
  }
  worker = AfterFuncHandle();
  ServerResults().Add(std::move(result));
}

// --- Sync API --------------------------------------------------------------

template <typename Stream>
class SyncServerOps : public ServerOps {
 public:
  SyncServerOps(grpc::ServerContext* sc, Stream* stream,
                const StreamOptions& o, Kind kind, Msg* response)
      : stream_(sc, stream, o, MethodOf(kind)), response_(response) {}
  bool Read(Msg* m) override {
    if constexpr (requires { stream_.Read(m); }) {
      return stream_.Read(m);
    } else {
      return false;
    }
  }
  bool Write(const Msg& m) override {
    if constexpr (requires { stream_.Write(m); }) {
      return stream_.Write(m);
    } else {
      return false;
    }
  }
  grpc::Status Finish(const grpc::Status& s, const Msg& response) override {
    if (response_ != nullptr) *response_ = response;
    return stream_.Finish(s);
  }
  StreamGuard& guard() override { return stream_.guard(); }

 private:
  ServerStream<Stream> stream_;
  Msg* const response_;
};

class SyncService : public StreamTest::Service {
 public:
  grpc::Status Down(grpc::ServerContext* sc, const Msg* req,
                    grpc::ServerWriter<Msg>* w) override {
    ServerScript s = ScriptOf(*sc);
    SyncServerOps<grpc::ServerWriter<Msg>> ops(sc, w, s.options, Kind::kDown,
                                               nullptr);
    RunHandler(Kind::kDown, s, *req, ops);
    return last_status(ops);
  }
  grpc::Status Up(grpc::ServerContext* sc, grpc::ServerReader<Msg>* r,
                  Msg* resp) override {
    ServerScript s = ScriptOf(*sc);
    SyncServerOps<grpc::ServerReader<Msg>> ops(sc, r, s.options, Kind::kUp,
                                               resp);
    RunHandler(Kind::kUp, s, Msg(), ops);
    return last_status(ops);
  }
  grpc::Status Bidi(grpc::ServerContext* sc,
                    grpc::ServerReaderWriter<Msg, Msg>* rw) override {
    ServerScript s = ScriptOf(*sc);
    SyncServerOps<grpc::ServerReaderWriter<Msg, Msg>> ops(
        sc, rw, s.options, Kind::kBidi, nullptr);
    RunHandler(Kind::kBidi, s, Msg(), ops);
    return last_status(ops);
  }

 private:
  static grpc::Status last_status(ServerOps& ops) {
    return ops.guard().FinalStatus(grpc::Status::OK);
  }
};

// --- Callback API ----------------------------------------------------------

// Completion of one kind of operation, waited for by the handler thread.
class OpSignal {
 public:
  void Arm() {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = false;
  }
  void Fire(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    ok_ = ok;
    done_ = true;
    cv_.notify_all();
  }
  // The operation's ok (false if it did not complete within kBound).
  bool Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, absl::ToChronoSeconds(kBound),
                      [&] { return done_; })) {
      ADD_FAILURE() << "an operation did not complete within the bound";
      return false;
    }
    return ok_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  bool ok_ = false;
};

// A callback reactor whose handler logic runs on a thread of its own.
template <typename Reactor>
class CallbackServer : public Reactor, public ServerOps {
 public:
  CallbackServer(grpc::CallbackServerContext* sc, Kind kind, Msg request,
                 Msg* response)
      : Reactor(sc, ScriptOf(*sc).options, MethodOf(kind)),
        response_(response) {
    // Under a lock: OnStreamDone joins it on a gRPC thread, handed over
    // through gRPC core (which TSan cannot see).
    std::lock_guard<std::mutex> lock(thread_mu_);
    thread_ = std::thread([this, kind, s = ScriptOf(*sc), request] {
      RunHandler(kind, s, request, *this);
    });
  }
  bool Read(Msg* m) override {
    if constexpr (requires { this->StartRead(m); }) {
      read_.Arm();
      this->StartRead(m);
      return read_.Wait();
    } else {
      return false;
    }
  }
  bool Write(const Msg& m) override {
    if constexpr (requires { this->StartWrite(&m); }) {
      write_.Arm();
      this->StartWrite(&m);
      return write_.Wait();
    } else {
      return false;
    }
  }
  grpc::Status Finish(const grpc::Status& s, const Msg& response) override {
    if (response_ != nullptr) *response_ = response;
    Reactor::Finish(s);  // The bound Finish: ends the guard.
    // OnDone (which deletes this) waits for this thread: still alive.
    return this->guard().FinalStatus(s);
  }
  StreamGuard& guard() override { return Reactor::guard(); }

  // Override the reactor's hooks where it has them.
  void OnStreamReadDone(bool ok) { read_.Fire(ok); }
  void OnStreamWriteDone(bool ok) { write_.Fire(ok); }
  void OnStreamDone() override {
    {
      std::lock_guard<std::mutex> lock(thread_mu_);
      thread_.join();
    }
    delete this;
  }

 private:
  Msg* const response_;
  std::mutex thread_mu_;
  OpSignal read_;
  OpSignal write_;
  std::thread thread_;
};

class CallbackService : public StreamTest::CallbackService {
 public:
  grpc::ServerWriteReactor<Msg>* Down(grpc::CallbackServerContext* sc,
                                      const Msg* req) override {
    return new CallbackServer<ServerWriteReactor<Msg>>(sc, Kind::kDown,
                                                        *req, nullptr);
  }
  grpc::ServerReadReactor<Msg>* Up(grpc::CallbackServerContext* sc,
                                   Msg* resp) override {
    return new CallbackServer<ServerReadReactor<Msg>>(sc, Kind::kUp, Msg(),
                                                       resp);
  }
  grpc::ServerBidiReactor<Msg, Msg>* Bidi(
      grpc::CallbackServerContext* sc) override {
    return new CallbackServer<ServerBidiReactor<Msg, Msg>>(sc, Kind::kBidi,
                                                             Msg(), nullptr);
  }
};

// --- Completion-queue API --------------------------------------------------

// Tags of one call's own completion queue.
void* const kRequestTag = reinterpret_cast<void*>(1);
void* const kReadTag = reinterpret_cast<void*>(2);
void* const kWriteTag = reinterpret_cast<void*>(3);
void* const kFinishTag = reinterpret_cast<void*>(4);
void* const kDoneTag = reinterpret_cast<void*>(5);
void* const kStartTag = reinterpret_cast<void*>(6);
void* const kWritesDoneTag = reinterpret_cast<void*>(7);

// Waits on `cq` for `want`, handling the others it sees (records the done
// tag); false if `want` came back !ok or not within kBound. With `until`,
// returns as soon as it holds (polling every 10 ms).
bool WaitTag(grpc::CompletionQueue& cq, void* want, bool* done_seen,
             const std::function<bool()>& until = nullptr) {
  const absl::Time end = absl::Now() + kBound;
  while (absl::Now() < end) {
    if (until && until()) return true;
    void* tag = nullptr;
    bool ok = false;
    auto status = cq.AsyncNext(
        &tag, &ok, std::chrono::system_clock::now() +
                       std::chrono::milliseconds(until ? 10 : 1000));
    if (status == grpc::CompletionQueue::SHUTDOWN) return false;
    if (status == grpc::CompletionQueue::TIMEOUT) continue;
    if (tag == kDoneTag && done_seen != nullptr) *done_seen = true;
    if (tag == want) return ok;
  }
  if (!until) ADD_FAILURE() << "a tag did not come back within the bound";
  return false;
}

void DrainAndShutdown(grpc::CompletionQueue& cq) {
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

// One async call: its context, responder and queue, run on a thread.
template <typename Responder>
class AsyncServerCall : public ServerOps {
 public:
  AsyncServerCall() : responder_(&sc_) { sc_.AsyncNotifyWhenDone(kDoneTag); }
  ~AsyncServerCall() override { DrainAndShutdown(cq_); }

  grpc::ServerContext sc_;
  grpc::CompletionQueue cq_;
  Responder responder_;
  Msg request_;

  void Run(Kind kind) {
    guard_.emplace(&sc_, ScriptOf(sc_).options, MethodOf(kind));
    ops_.emplace(&*guard_, &responder_);
    RunHandler(kind, ScriptOf(sc_), request_, *this);
    guard_.reset();
  }
  bool Read(Msg* m) override {
    if constexpr (requires { responder_.Read(m, kReadTag); }) {
      ops_->Read(m, kReadTag);
      return ops_->ReadDone(WaitTag(cq_, kReadTag, &done_seen_));
    } else {
      return false;
    }
  }
  bool Write(const Msg& m) override {
    if constexpr (requires { responder_.Write(m, kWriteTag); }) {
      ops_->Write(m, kWriteTag);
      return ops_->WriteDone(WaitTag(cq_, kWriteTag, &done_seen_));
    } else {
      return false;
    }
  }
  grpc::Status Finish(const grpc::Status& s, const Msg& response) override {
    // Ends the guard, sends the stream's status (the stream's if it was
    // cut); once the done tag says whether the call was cancelled
    // (IsCancelled is safe only then), the guard learns it.
    guard_->End();
    const grpc::Status sent = guard_->FinalStatus(s);
    if constexpr (requires { responder_.Finish(response, sent, kFinishTag); }) {
      responder_.Finish(response, sent, kFinishTag);
    } else {
      responder_.Finish(sent, kFinishTag);
    }
    WaitTag(cq_, kFinishTag, &done_seen_);
    if (!done_seen_) done_seen_ = WaitTag(cq_, kDoneTag, nullptr) || true;
    guard_->CheckCallCancelled();
    return guard_->FinalStatus(s);
  }
  StreamGuard& guard() override { return *guard_; }
  void WaitForCut() override {
    // The queue must be drained for the call's close to reach its Context.
    WaitTag(cq_, nullptr, &done_seen_,
            [this] { return guard_->context().IsDone(); });
  }

 private:
  bool done_seen_ = false;
  std::optional<StreamGuard> guard_;
  std::optional<AsyncStream<Responder>> ops_;
};

class AsyncServer {
 public:
  void Start(StreamTest::AsyncService* service,
             grpc::ServerCompletionQueue* cq) {
    service_ = service;
    cq_ = cq;
    Request<grpc::ServerAsyncWriter<Msg>>(Kind::kDown);
    Request<grpc::ServerAsyncReader<Msg, Msg>>(Kind::kUp);
    Request<grpc::ServerAsyncReaderWriter<Msg, Msg>>(Kind::kBidi);
    dispatcher_ = std::thread([this] { Dispatch(); });
  }
  // After the server's Shutdown: stops the dispatcher and the call threads.
  void Stop() {
    cq_->Shutdown();
    dispatcher_.join();
    for (std::thread& t : threads_) t.join();
  }

 private:
  // A pending request: when its tag arrives, `run` serves it on a thread.
  struct Pending {
    std::function<void()> run;
    std::function<void()> drop;
  };

  template <typename Responder>
  void Request(Kind kind) {
    auto call = std::make_shared<AsyncServerCall<Responder>>();
    auto* pending = new Pending;
    pending->run = [this, call, kind] {
      Request<Responder>(kind);
      threads_.emplace_back([call, kind] { call->Run(kind); });
    };
    pending->drop = [call] {};
    if constexpr (std::is_same_v<Responder, grpc::ServerAsyncWriter<Msg>>) {
      service_->RequestDown(&call->sc_, &call->request_, &call->responder_,
                            &call->cq_, cq_, pending);
    } else if constexpr (std::is_same_v<Responder,
                                        grpc::ServerAsyncReader<Msg, Msg>>) {
      service_->RequestUp(&call->sc_, &call->responder_, &call->cq_, cq_,
                          pending);
    } else {
      service_->RequestBidi(&call->sc_, &call->responder_, &call->cq_, cq_,
                            pending);
    }
  }

  void Dispatch() {
    void* tag;
    bool ok;
    while (cq_->Next(&tag, &ok)) {
      std::unique_ptr<Pending> p(static_cast<Pending*>(tag));
      if (ok) {
        p->run();
      } else {
        p->drop();
      }
    }
  }

  StreamTest::AsyncService* service_ = nullptr;
  grpc::ServerCompletionQueue* cq_ = nullptr;
  std::thread dispatcher_;
  std::vector<std::thread> threads_;  // Dispatcher's thread only.
};

// ---------------------------------------------------------------------------
// Client side.

class ClientOps {
 public:
  virtual ~ClientOps() = default;
  virtual bool Read(Msg* m) = 0;
  virtual bool Write(const Msg& m) = 0;
  virtual void WritesDone() = 0;
  virtual grpc::Status Finish() = 0;
  virtual StreamGuard& guard() = 0;
};

struct ClientSetup {
  Context ctx;
  StreamOptions options;                        // The client's own.
  std::map<std::string, std::string> metadata;  // The server's script.
  Msg down_request;
};

void AddMetadata(grpc::ClientContext* cc, const ClientSetup& setup) {
  for (const auto& [k, v] : setup.metadata) cc->AddMetadata(k, v);
}

// --- Sync client.
template <typename Stream>
class SyncClient : public ClientOps {
 public:
  template <typename Start>
  SyncClient(const ClientSetup& setup, Kind kind, Start start)
      : stream_(setup.ctx, setup.options,
                [&](grpc::ClientContext* cc) {
                  AddMetadata(cc, setup);
                  return start(cc);
                },
                MethodOf(kind)) {}
  bool Read(Msg* m) override {
    if constexpr (requires { stream_.Read(m); }) {
      return stream_.Read(m);
    } else {
      return false;
    }
  }
  bool Write(const Msg& m) override {
    if constexpr (requires { stream_.Write(m); }) {
      return stream_.Write(m);
    } else {
      return false;
    }
  }
  void WritesDone() override {
    if constexpr (requires { stream_.WritesDone(); }) stream_.WritesDone();
  }
  grpc::Status Finish() override { return stream_.Finish(); }
  StreamGuard& guard() override { return stream_.guard(); }

 private:
  ClientStream<Stream> stream_;
};

// --- Callback client: a reactor driven from the test thread (with a hold,
// so OnDone waits for Finish()).
template <typename Reactor>
class CallbackClientBase : public Reactor, public ClientOps {
 public:
  CallbackClientBase(const ClientSetup& setup, Kind kind)
      : Reactor(setup.ctx, setup.options, MethodOf(kind)) {
    AddMetadata(this->client_context(), setup);
  }
  ~CallbackClientBase() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!done_) this->client_context()->TryCancel();
    }
    (void)Finish();
  }
  void Begin() {
    // OnStreamDone may run on a gRPC executor thread, handed the reactor
    // through gRPC core (which TSan cannot see): releasing mu_ here
    // publishes the construction to its lock of mu_.
    { std::lock_guard<std::mutex> lock(mu_); }
    this->AddHold();
    this->StartCall();
  }
  bool Read(Msg* m) override {
    if constexpr (requires { this->StartRead(m); }) {
      read_.Arm();
      this->StartRead(m);
      return read_.Wait();
    } else {
      return false;
    }
  }
  bool Write(const Msg& m) override {
    if constexpr (requires { this->StartWrite(&m); }) {
      write_.Arm();
      this->StartWrite(&m);
      return write_.Wait();
    } else {
      return false;
    }
  }
  void WritesDone() override {
    if constexpr (requires { this->StartWritesDone(); }) {
      write_.Arm();
      this->StartWritesDone();
      (void)write_.Wait();
    }
  }
  grpc::Status Finish() override {
    if (!released_) {
      released_ = true;
      this->RemoveHold();
    }
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, absl::ToChronoSeconds(kBound),
                      [&] { return done_; })) {
      ADD_FAILURE() << "OnDone did not come within the bound";
    }
    return status_;
  }
  StreamGuard& guard() override { return Reactor::guard(); }
  void OnWritesDoneDone(bool ok) { write_.Fire(ok); }
  void OnStreamDone(const grpc::Status& s) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = s;
    done_ = true;
    cv_.notify_all();
  }

 protected:
  OpSignal read_;
  OpSignal write_;

 private:
  bool released_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  grpc::Status status_;
};

class CallbackDownClient : public CallbackClientBase<ClientReadReactor<Msg>> {
 public:
  CallbackDownClient(StreamTest::Stub* stub, const ClientSetup& setup)
      : CallbackClientBase(setup, Kind::kDown), request_(setup.down_request) {
    stub->async()->Down(client_context(), &request_, this);
    Begin();
  }
  void OnStreamReadDone(bool ok) override { read_.Fire(ok); }

 private:
  Msg request_;
};
class CallbackUpClient : public CallbackClientBase<ClientWriteReactor<Msg>> {
 public:
  CallbackUpClient(StreamTest::Stub* stub, const ClientSetup& setup)
      : CallbackClientBase(setup, Kind::kUp) {
    stub->async()->Up(client_context(), &response_, this);
    Begin();
  }
  void OnStreamWriteDone(bool ok) override { write_.Fire(ok); }

 private:
  Msg response_;
};
class CallbackBidiClient
    : public CallbackClientBase<ClientBidiReactor<Msg, Msg>> {
 public:
  CallbackBidiClient(StreamTest::Stub* stub, const ClientSetup& setup)
      : CallbackClientBase(setup, Kind::kBidi) {
    stub->async()->Bidi(client_context(), this);
    Begin();
  }
  void OnStreamReadDone(bool ok) override { read_.Fire(ok); }
  void OnStreamWriteDone(bool ok) override { write_.Fire(ok); }
};

// --- Completion-queue client.
template <typename Stream>
class AsyncClient : public ClientOps {
 public:
  template <typename Prepare>
  AsyncClient(const ClientSetup& setup, Kind kind, Prepare prepare)
      : cc_(NewClientContext(setup.ctx)),
        guard_(setup.ctx, cc_.get(), setup.options, MethodOf(kind)) {
    AddMetadata(cc_.get(), setup);
    stream_ = prepare(cc_.get(), &cq_, &response_);
    guard_.BindClientCall();
    ops_.emplace(&guard_, stream_.get());
    stream_->StartCall(kStartTag);
    started_ = WaitTag(cq_, kStartTag, nullptr);
  }
  ~AsyncClient() override {
    if (!finished_) cc_->TryCancel();
    (void)Finish();
    guard_.End();
    DrainAndShutdown(cq_);
  }
  bool Read(Msg* m) override {
    if constexpr (requires { stream_->Read(m, kReadTag); }) {
      if (!started_) return false;
      ops_->Read(m, kReadTag);
      return ops_->ReadDone(WaitTag(cq_, kReadTag, nullptr));
    } else {
      return false;
    }
  }
  bool Write(const Msg& m) override {
    if constexpr (requires { stream_->Write(m, kWriteTag); }) {
      if (!started_) return false;
      ops_->Write(m, kWriteTag);
      return ops_->WriteDone(WaitTag(cq_, kWriteTag, nullptr));
    } else {
      return false;
    }
  }
  void WritesDone() override {
    if constexpr (requires { stream_->WritesDone(kWritesDoneTag); }) {
      stream_->WritesDone(kWritesDoneTag);
      (void)WaitTag(cq_, kWritesDoneTag, nullptr);
    }
  }
  grpc::Status Finish() override {
    if (finished_) return status_;
    finished_ = true;
    ops_->Finish(&status_, kFinishTag);
    (void)WaitTag(cq_, kFinishTag, nullptr);
    guard_.End();
    status_ = guard_.FinalStatus(status_);
    return status_;
  }
  StreamGuard& guard() override { return guard_; }

 private:
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::ClientContext> cc_;
  StreamGuard guard_;
  Msg response_;
  std::unique_ptr<Stream> stream_;
  std::optional<AsyncStream<Stream>> ops_;
  bool started_ = false;
  bool finished_ = false;
  grpc::Status status_;
};

// ---------------------------------------------------------------------------
// The fixture: one server per API (all three, so a parameter picks one),
// reqctx's interceptors on both sides.

class StreamsTest
    : public ::testing::TestWithParam<std::tuple<Api, Kind>> {
 protected:
  static void SetUpTestSuite() {
    suite_ = new Suite();
  }
  static void TearDownTestSuite() {
    delete suite_;
    suite_ = nullptr;
  }
  void SetUp() override { ServerResults().Clear(); }
  void TearDown() override {
    // No guard, server call or binding is left, and the timers drain (the
    // guards' timeout timers and the calls' deadline timers included).
    EXPECT_TRUE(testing::Eventually(
        [] {
          return StreamGuard::LiveForTesting() == 0 &&
                 debug::LiveServerCallCount() == 0 &&
                 debug::WatchedServerCallCount() == 0 &&
                 debug::PendingTimerCount() == 0;
        },
        kBound))
        << "guards " << StreamGuard::LiveForTesting() << ", server calls "
        << debug::LiveServerCallCount() << ", timers "
        << debug::PendingTimerCount();
  }

  Api api() const { return std::get<0>(GetParam()); }
  Kind kind() const { return std::get<1>(GetParam()); }

  std::unique_ptr<ClientOps> Start(const ClientSetup& setup) {
    StreamTest::Stub* stub = suite_->stubs[static_cast<int>(api())].get();
    switch (api()) {
      case Api::kSync:
        switch (kind()) {
          case Kind::kDown:
            return std::make_unique<SyncClient<grpc::ClientReader<Msg>>>(
                setup, kind(), [&](grpc::ClientContext* cc) {
                  return stub->Down(cc, setup.down_request);
                });
          case Kind::kUp:
            return std::make_unique<SyncClient<grpc::ClientWriter<Msg>>>(
                setup, kind(), [&, this](grpc::ClientContext* cc) {
                  return stub->Up(cc, &up_response_);
                });
          case Kind::kBidi:
            return std::make_unique<
                SyncClient<grpc::ClientReaderWriter<Msg, Msg>>>(
                setup, kind(),
                [&](grpc::ClientContext* cc) { return stub->Bidi(cc); });
        }
        break;
      case Api::kCallback:
        switch (kind()) {
          case Kind::kDown:
            return std::make_unique<CallbackDownClient>(stub, setup);
          case Kind::kUp:
            return std::make_unique<CallbackUpClient>(stub, setup);
          case Kind::kBidi:
            return std::make_unique<CallbackBidiClient>(stub, setup);
        }
        break;
      case Api::kAsync:
        switch (kind()) {
          case Kind::kDown:
            return std::make_unique<AsyncClient<grpc::ClientAsyncReader<Msg>>>(
                setup, kind(),
                [&](grpc::ClientContext* cc, grpc::CompletionQueue* cq,
                    Msg*) { return stub->PrepareAsyncDown(cc, setup.down_request, cq); });
          case Kind::kUp:
            return std::make_unique<AsyncClient<grpc::ClientAsyncWriter<Msg>>>(
                setup, kind(),
                [&](grpc::ClientContext* cc, grpc::CompletionQueue* cq,
                    Msg* resp) { return stub->PrepareAsyncUp(cc, resp, cq); });
          case Kind::kBidi:
            return std::make_unique<
                AsyncClient<grpc::ClientAsyncReaderWriter<Msg, Msg>>>(
                setup, kind(),
                [&](grpc::ClientContext* cc, grpc::CompletionQueue* cq,
                    Msg*) { return stub->PrepareAsyncBidi(cc, cq); });
        }
        break;
    }
    return nullptr;
  }

  ServerResult NextResult() {
    std::optional<ServerResult> r = ServerResults().Next();
    if (!r.has_value()) {
      ADD_FAILURE() << "no handler ended within the bound";
      return {};
    }
    return *r;
  }

 private:
  struct Suite {
    Suite() {
      for (int a = 0; a < 3; ++a) {
        grpc::ServerBuilder builder;
        int port = 0;
        builder.AddListeningPort("127.0.0.1:0",
                                 grpc::InsecureServerCredentials(), &port);
        if (a == 0) builder.RegisterService(&sync_service);
        if (a == 1) builder.RegisterService(&callback_service);
        std::unique_ptr<grpc::ServerCompletionQueue> cq;
        if (a == 2) {
          builder.RegisterService(&async_service);
          cq = builder.AddCompletionQueue();
        }
        InstallServerInterceptors(builder);
        servers[a] = builder.BuildAndStart();
        if (a == 2) {
          async_cq = std::move(cq);
          async_server.Start(&async_service, async_cq.get());
        }
        stubs[a] = StreamTest::NewStub(reqctx::CreateChannel(
            "127.0.0.1:" + std::to_string(port),
            grpc::InsecureChannelCredentials()));
      }
    }
    ~Suite() {
      for (auto& s : servers) {
        s->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
      }
      async_server.Stop();
      DrainAndShutdown(*async_cq);
    }
    SyncService sync_service;
    CallbackService callback_service;
    StreamTest::AsyncService async_service;
    AsyncServer async_server;
    std::unique_ptr<grpc::ServerCompletionQueue> async_cq;
    std::unique_ptr<grpc::Server> servers[3];
    std::unique_ptr<StreamTest::Stub> stubs[3];
  };
  static Suite* suite_;
  Msg up_response_;
};

StreamsTest::Suite* StreamsTest::suite_ = nullptr;

bool HasCode(const grpc::Status& s, grpc::StatusCode code) {
  return s.error_code() == code;
}

// The client cancels mid-stream: the handler ends with CANCELLED, its
// worker is stopped with the cancel, and the client gets CANCELLED.
TEST_P(StreamsTest, ClientCancelMidStreamStopsHandlerAndWorker) {
  auto [ctx, cancel] = WithCancel(Background());
  ClientSetup setup;
  setup.ctx = ctx;
  setup.metadata["x-mode"] = "stall";
  setup.down_request.set_count(3);
  setup.down_request.set_size(10);
  std::unique_ptr<ClientOps> c = Start(setup);
  Msg m = Sized(10);
  m.set_size(10);
  switch (kind()) {
    case Kind::kDown:
      for (int i = 0; i < 3; ++i) ASSERT_TRUE(c->Read(&m));
      break;
    case Kind::kUp:
      for (int i = 0; i < 3; ++i) ASSERT_TRUE(c->Write(m));
      break;
    case Kind::kBidi:
      ASSERT_TRUE(c->Write(m));
      ASSERT_TRUE(c->Read(&m));
      break;
  }
  cancel();
  grpc::Status s = c->Finish();
  EXPECT_TRUE(HasCode(s, grpc::StatusCode::CANCELLED)) << s.error_message();
  ServerResult r = NextResult();
  EXPECT_TRUE(HasCode(r.status, grpc::StatusCode::CANCELLED))
      << r.status.error_code() << " " << r.status.error_message();
  EXPECT_EQ(r.worker.code(), absl::StatusCode::kCancelled) << r.worker;
  c.reset();
}

// The caller's deadline ends the stream mid-way, on both sides.
TEST_P(StreamsTest, DeadlineEndsStreamMidWay) {
  auto [ctx, cancel] = WithTimeout(Background(), kDeadline);
  ClientSetup setup;
  setup.ctx = ctx;
  setup.metadata["x-mode"] = "stall";
  setup.down_request.set_count(2);
  setup.down_request.set_size(10);
  std::unique_ptr<ClientOps> c = Start(setup);
  Msg m = Sized(10);
  m.set_size(10);
  switch (kind()) {
    case Kind::kDown:
      for (int i = 0; i < 2; ++i) ASSERT_TRUE(c->Read(&m));
      EXPECT_FALSE(c->Read(&m));  // Waits until the deadline.
      break;
    case Kind::kUp:
      for (int i = 0; i < 2; ++i) ASSERT_TRUE(c->Write(m));
      break;  // Finish waits: the server waits for more.
    case Kind::kBidi:
      ASSERT_TRUE(c->Write(m));
      ASSERT_TRUE(c->Read(&m));
      EXPECT_FALSE(c->Read(&m));  // Waits until the deadline.
      break;
  }
  grpc::Status s = c->Finish();
  EXPECT_TRUE(HasCode(s, grpc::StatusCode::DEADLINE_EXCEEDED))
      << s.error_code() << " " << s.error_message();
  ServerResult r = NextResult();
  EXPECT_TRUE(HasCode(r.status, grpc::StatusCode::DEADLINE_EXCEEDED))
      << r.status.error_code() << " " << r.status.error_message();
  if (api() == Api::kAsync) {
    // A failed Read may come back before the queue delivers the call's
    // close: the handler ends its guard first, which stops the worker.
    EXPECT_FALSE(r.worker.ok());
  } else {
    EXPECT_EQ(r.worker.code(), absl::StatusCode::kDeadlineExceeded)
        << r.worker;
  }
}

// The peer stops sending: the reading side cuts the stream at its
// message-wait timeout, saying so and after how many messages.
TEST_P(StreamsTest, SilentPeerCutAtMessageWait) {
  ClientSetup setup;
  setup.ctx = Background();
  setup.down_request.set_count(3);
  setup.down_request.set_size(10);
  Msg m = Sized(10);
  m.set_size(10);
  const absl::Time start = absl::Now();
  if (kind() == Kind::kDown) {
    // The server stalls after 3 messages; the client's own timeout cuts.
    setup.metadata["x-mode"] = "stall";
    setup.options.message_wait = kWait;
    std::unique_ptr<ClientOps> c = Start(setup);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(c->Read(&m));
    EXPECT_FALSE(c->Read(&m));
    grpc::Status s = c->Finish();
    EXPECT_TRUE(HasCode(s, grpc::StatusCode::DEADLINE_EXCEEDED))
        << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "message-wait timeout"))
        << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "after 3 messages"))
        << s.error_message();
    EXPECT_EQ(c->guard().stats().timeout, StreamTimeout::kMessageWait);
    EXPECT_GE(absl::Now() - start, kWait);
    ServerResult r = NextResult();
    EXPECT_FALSE(r.status.ok());
    EXPECT_FALSE(r.worker.ok());
    return;
  }
  // The client stalls after 3 messages; the server's timeout cuts.
  setup.metadata["x-wait-ms"] =
      std::to_string(absl::ToInt64Milliseconds(kWait));
  std::unique_ptr<ClientOps> c = Start(setup);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c->Write(m));
    if (kind() == Kind::kBidi) {
      ASSERT_TRUE(c->Read(&m));
    }
  }
  ServerResult r = NextResult();
  EXPECT_TRUE(HasCode(r.status, grpc::StatusCode::DEADLINE_EXCEEDED))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "message-wait timeout"))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "after 3 messages received"))
      << r.status.error_message();
  EXPECT_EQ(r.in, 3u);
  EXPECT_EQ(r.worker.code(), absl::StatusCode::kDeadlineExceeded) << r.worker;
  EXPECT_GE(absl::Now() - start, kWait);
  // The client is told why: the server cancels with the timeout's status
  // (code and message).
  grpc::Status s = c->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "message-wait timeout"))
      << s.error_message();
}

// Client-streaming: the client half-closes and waits for the response; the
// server reads everything and never answers. The client's message-wait
// timeout covers that wait too (the response is the message it waits for):
// the call is cut at it instead of hanging until the call's deadline.
TEST_P(StreamsTest, SilentServerAfterHalfCloseCutAtClientMessageWait) {
  if (kind() != Kind::kUp) GTEST_SKIP() << "client-streaming only";
  auto [ctx, cancel] = WithTimeout(Background(), kBound / 2);
  ClientSetup setup;
  setup.ctx = ctx;
  setup.metadata["x-mode"] = "stall";
  setup.options.message_wait = kWait;
  const absl::Time start = absl::Now();
  std::unique_ptr<ClientOps> c = Start(setup);
  Msg m = Sized(10);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c->Write(m));
  c->WritesDone();
  grpc::Status s = c->Finish();
  EXPECT_TRUE(HasCode(s, grpc::StatusCode::DEADLINE_EXCEEDED))
      << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "message-wait timeout"))
      << s.error_message();
  EXPECT_EQ(c->guard().stats().timeout, StreamTimeout::kMessageWait);
  EXPECT_GE(absl::Now() - start, kWait);
  EXPECT_LT(absl::Now() - start, kBound / 2);
  ServerResult r = NextResult();
  EXPECT_FALSE(r.status.ok());
  EXPECT_EQ(r.in, 3u);
}

// Many streams stall at once: every one is cut at the server's message-wait
// timeout (timers firing together, cancels racing the handlers' ends), each
// client learns why, and no guard, call or binding is left (TearDown).
TEST_P(StreamsTest, ManyStalledStreamsAllCutAtOnce) {
  if (kind() != Kind::kBidi) GTEST_SKIP() << "bidi only (the others agree)";
  const int n = PlainOrSanitized(64, 16);
  ClientSetup setup;
  setup.ctx = Background();
  setup.metadata["x-wait-ms"] =
      std::to_string(absl::ToInt64Milliseconds(kWait));
  std::vector<std::unique_ptr<ClientOps>> clients;
  Msg m = Sized(10);
  for (int i = 0; i < n; ++i) {
    clients.push_back(Start(setup));
    ASSERT_TRUE(clients.back()->Write(m)) << i;
    ASSERT_TRUE(clients.back()->Read(&m)) << i;
  }
  for (int i = 0; i < n; ++i) {
    EXPECT_FALSE(clients[i]->Read(&m)) << i;
    grpc::Status s = clients[i]->Finish();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "message-wait timeout"))
        << i << ": " << s.error_code() << " " << s.error_message();
  }
  for (int i = 0; i < n; ++i) {
    ServerResult r = NextResult();
    EXPECT_TRUE(HasCode(r.status, grpc::StatusCode::DEADLINE_EXCEEDED))
        << i << ": " << r.status.error_message();
    EXPECT_EQ(r.in, 1u) << i;
  }
  clients.clear();
}

// The peer stops reading: the writer's Write blocks on flow control (256 KiB
// messages) and its idle timeout ends it.
TEST_P(StreamsTest, NonReadingPeerEndsBlockedWriteAtIdle) {
  ClientSetup setup;
  setup.ctx = Background();
  setup.down_request.set_count(kMaxBigWrites);
  setup.down_request.set_size(kBigSize);
  const absl::Time start = absl::Now();
  if (kind() == Kind::kUp) {
    // The server never reads; the client's Write blocks; its idle cuts.
    setup.metadata["x-mode"] = "noread";
    setup.options.idle = kIdle;
    std::unique_ptr<ClientOps> c = Start(setup);
    Msg big = Sized(kBigSize);
    int written = 0;
    while (written < kMaxBigWrites && c->Write(big)) ++written;
    EXPECT_LT(written, kMaxBigWrites);
    grpc::Status s = c->Finish();
    EXPECT_TRUE(HasCode(s, grpc::StatusCode::DEADLINE_EXCEEDED))
        << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "idle timeout"))
        << s.error_message();
    EXPECT_EQ(c->guard().stats().timeout, StreamTimeout::kIdle);
    EXPECT_GE(absl::Now() - start, kIdle);
    ServerResult r = NextResult();
    EXPECT_FALSE(r.status.ok());
    EXPECT_FALSE(r.worker.ok());
    return;
  }
  // The server writes big messages; the client never reads; the server's
  // idle timeout ends its blocked Write.
  setup.metadata["x-mode"] = "noread";
  setup.metadata["x-idle-ms"] =
      std::to_string(absl::ToInt64Milliseconds(kIdle));
  std::unique_ptr<ClientOps> c = Start(setup);
  ServerResult r = NextResult();
  EXPECT_TRUE(HasCode(r.status, grpc::StatusCode::DEADLINE_EXCEEDED))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "idle timeout"))
      << r.status.error_message();
  EXPECT_LT(r.out, static_cast<uint64_t>(kMaxBigWrites));
  EXPECT_EQ(r.worker.code(), absl::StatusCode::kDeadlineExceeded) << r.worker;
  EXPECT_GE(absl::Now() - start, kIdle);
  // gRPC delivers the status once what was received has been read.
  Msg m;
  int drained = 0;
  while (drained < kMaxBigWrites && c->Read(&m)) ++drained;
  EXPECT_LT(drained, kMaxBigWrites);
  grpc::Status s = c->Finish();
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(absl::StrContains(s.error_message(), "idle timeout"))
      << s.error_code() << " " << s.error_message();
}

// A stream that runs to its end is not cut, and its counts are right.
TEST_P(StreamsTest, NormalStreamEndsOk) {
  ClientSetup setup;
  setup.ctx = Background();
  setup.options.message_wait = absl::Seconds(10);
  setup.options.idle = absl::Seconds(10);
  setup.metadata["x-wait-ms"] = "10000";
  setup.metadata["x-idle-ms"] = "10000";
  setup.down_request.set_count(5);
  setup.down_request.set_size(10);
  std::unique_ptr<ClientOps> c = Start(setup);
  Msg m = Sized(10);
  m.set_size(10);
  int got = 0;
  switch (kind()) {
    case Kind::kDown:
      while (c->Read(&m)) ++got;
      EXPECT_EQ(got, 5);
      break;
    case Kind::kUp:
      for (int i = 0; i < 5; ++i) ASSERT_TRUE(c->Write(m));
      c->WritesDone();
      break;
    case Kind::kBidi:
      for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(c->Write(m));
        ASSERT_TRUE(c->Read(&m));
      }
      c->WritesDone();
      EXPECT_FALSE(c->Read(&m));
      break;
  }
  grpc::Status s = c->Finish();
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  EXPECT_TRUE(c->guard().status().ok()) << c->guard().status();
  ServerResult r = NextResult();
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(r.in, kind() == Kind::kDown ? 0u : 5u);
  EXPECT_EQ(r.out, kind() == Kind::kUp ? 0u : 5u);
}

INSTANTIATE_TEST_SUITE_P(
    AllApisAllKinds, StreamsTest,
    ::testing::Combine(::testing::Values(Api::kSync, Api::kCallback,
                                         Api::kAsync),
                       ::testing::Values(Kind::kDown, Kind::kUp, Kind::kBidi)),
    [](const ::testing::TestParamInfo<std::tuple<Api, Kind>>& info) {
      return std::string(ApiName(std::get<0>(info.param))) +
             KindName(std::get<1>(info.param));
    });

}  // namespace
}  // namespace reqctx::streams
