// Sync-API streams bound to a Context, with the message-wait and idle
// timeouts of stream_guard.h (read that first: what is bound, the statuses,
// the cost).
//
// Server (any of grpc::ServerReader<R>, ServerWriter<W>,
// ServerReaderWriter<W, R> handed to a sync handler):
//
//   grpc::Status Chat(grpc::ServerContext* sc,
//                     grpc::ServerReaderWriter<Resp, Req>* raw) override {
//     reqctx::streams::ServerStream stream(sc, raw, options_.For(kChat));
//     Req req;
//     while (stream.Read(&req)) {
//       Resp resp = Handle(stream.context(), req);
//       if (!stream.Write(resp)) break;
//     }
//     return stream.Finish(grpc::Status::OK);
//   }
//
// Client (the stub's sync streaming method, given as `start`):
//
//   reqctx::streams::ClientStream chat(ctx, options,
//       [&](grpc::ClientContext* cc) { return stub->Chat(cc); });
//   chat.Write(req); chat.WritesDone();
//   while (chat.Read(&resp)) { ... }
//   grpc::Status s = chat.Finish();
//
// Read and Write return false once the stream is cut (its Context done, a
// timeout expired) or the call ended, at the latest when the guard's cancel
// reaches gRPC: a Read waiting for a silent peer and a Write blocked on a
// peer that does not read both return then. Finish() gives the status:
// the stream's own (StreamGuard::FinalStatus) when it was cut.
//
// Thread-safety: as gRPC's sync streams: one Read and one Write may run at
// once, on different threads; Finish after both. Lifetime: a ServerStream
// lives inside the handler (it must not outlive the ServerContext); a
// ClientStream owns its ClientContext and stream, and its destructor, if
// Finish was not called, cancels the call and finishes it (waiting only for
// gRPC to acknowledge the cancel).
#ifndef REQCTX_STREAMS_SYNC_H_
#define REQCTX_STREAMS_SYNC_H_

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>
#include <grpcpp/support/sync_stream.h>

#include <memory>
#include <string_view>
#include <utility>

#include "context/core.h"
#include "interceptors/client_interceptor.h"
#include "streams/stream_guard.h"

namespace reqctx::streams {

namespace internal {

// Read and Write through a guard, for any gRPC sync stream type.
template <typename Stream>
class SyncOps {
 public:
  SyncOps(StreamGuard* guard, Stream* stream)
      : guard_(guard), stream_(stream) {}

  // gRPC's Read, bound: false once the stream is cut or the peer is done.
  template <typename R>
    requires requires(Stream* s, R* m) { s->Read(m); }
  bool Read(R* msg) {
    if (guard_->IsDone()) return false;
    guard_->ReadStarted();
    return guard_->ReadDone(stream_->Read(msg));
  }
  // gRPC's Write, bound: false once the stream is cut or the call ended.
  template <typename W>
    requires requires(Stream* s, const W& m) { s->Write(m, {}); }
  bool Write(const W& msg, grpc::WriteOptions options = {}) {
    if (guard_->IsDone()) return false;
    guard_->WriteStarted();
    return guard_->WriteDone(stream_->Write(msg, options));
  }

 protected:
  StreamGuard* const guard_;
  Stream* stream_;  // Set once, before the first Read or Write.
};

}  // namespace internal

// A sync handler's stream bound to its call's Context. Stream: a
// grpc::ServerReader<R>, ServerWriter<W> or ServerReaderWriter<W, R>.
template <typename Stream>
class ServerStream : public internal::SyncOps<Stream> {
 public:
  // `sc` and `stream` are the handler's; `method` labels the metrics.
  ServerStream(grpc::ServerContext* sc, Stream* stream,
               const StreamOptions& options, std::string_view method = {})
      : internal::SyncOps<Stream>(&guard_, stream),
        guard_(sc, options, method) {}
  // The same with the stream's Context a child of `parent` (see
  // StreamGuard's constructor of that shape).
  ServerStream(const Context& parent, grpc::ServerContext* sc, Stream* stream,
               const StreamOptions& options, std::string_view method = {})
      : internal::SyncOps<Stream>(&guard_, stream),
        guard_(parent, sc, options, method) {}

  const Context& context() const { return guard_.context(); }
  StreamGuard& guard() { return guard_; }
  // Ends the guard and returns what the handler should return: `s`, or the
  // stream's status if it was cut (see StreamGuard::FinalStatus).
  grpc::Status Finish(const grpc::Status& s) {
    guard_.CheckCallCancelled();
    guard_.End();
    return guard_.FinalStatus(s);
  }

 private:
  StreamGuard guard_;
};

// A client stream bound to `ctx`. Stream: grpc::ClientReader<R>,
// ClientWriter<W> or ClientReaderWriter<W, R>.
template <typename Stream>
class ClientStream : public internal::SyncOps<Stream> {
 public:
  // Makes the call's ClientContext with NewClientContext(ctx) and starts the
  // call with `start(ClientContext*)`, which returns the stub's
  // std::unique_ptr<Stream> (e.g. `[&](auto* cc) { return stub->Chat(cc); }`,
  // or `stub->Collect(cc, &response)` for a client-streaming call).
  template <typename Start>
  ClientStream(const Context& ctx, const StreamOptions& options, Start&& start,
               std::string_view method = {})
      : internal::SyncOps<Stream>(&guard_, nullptr),
        cc_(NewClientContext(ctx)),
        guard_(ctx, cc_.get(), options, method),
        owned_(std::forward<Start>(start)(cc_.get())) {
    this->stream_ = owned_.get();
    guard_.BindClientCall();
  }
  ClientStream(const ClientStream&) = delete;
  ClientStream& operator=(const ClientStream&) = delete;
  ~ClientStream() {
    if (!finished_) {
      cc_->TryCancel();
      (void)owned_->Finish();
    }
    guard_.End();
  }

  const Context& context() const { return guard_.context(); }
  StreamGuard& guard() { return guard_; }
  grpc::ClientContext& client_context() { return *cc_; }

  // Half-closes (client- and bidi-streaming calls).
  bool WritesDone()
    requires requires(Stream* s) { s->WritesDone(); }
  {
    if (guard_.IsDone()) return false;
    return owned_->WritesDone();
  }
  // gRPC's Finish (waits for the server's status), then ends the guard;
  // the call's status, or the stream's if it was cut. Once. As gRPC
  // requires, Read until it returns false first (on a reading stream):
  // gRPC delivers the status only after what was received has been read.
  // The wait for the status (a client-streaming call's response included)
  // is timed as a Read: the message-wait timeout cuts a server that never
  // answers.
  grpc::Status Finish() {
    finished_ = true;
    guard_.ReadStarted();
    grpc::Status s = owned_->Finish();
    (void)guard_.ReadDone(false);
    guard_.End();
    return guard_.FinalStatus(s);
  }

 private:
  std::unique_ptr<grpc::ClientContext> cc_;
  StreamGuard guard_;
  std::unique_ptr<Stream> owned_;
  bool finished_ = false;
};

// Deduces Stream from `start`'s std::unique_ptr<Stream>.
template <typename Start>
ClientStream(const Context&, const StreamOptions&, Start&&)
    -> ClientStream<typename std::invoke_result_t<
        Start, grpc::ClientContext*>::element_type>;
template <typename Start>
ClientStream(const Context&, const StreamOptions&, Start&&, std::string_view)
    -> ClientStream<typename std::invoke_result_t<
        Start, grpc::ClientContext*>::element_type>;

}  // namespace reqctx::streams

#endif  // REQCTX_STREAMS_SYNC_H_
