// Callback-API stream reactors bound to a Context, with the message-wait
// and idle timeouts of stream_guard.h (read that first: what is bound, the
// statuses, the cost).
//
// Each reactor here derives from gRPC's reactor of the same name and adds a
// StreamGuard. Use it as gRPC's, with these differences:
//   * construct it with the call's context (server) or your Context
//     (client), the StreamOptions and, optionally, the method for metrics;
//   * StartRead / StartWrite are the bound ones (they time the wait);
//   * override OnStreamReadDone(ok) / OnStreamWriteDone(ok) instead of
//     OnReadDone / OnWriteDone (final here): `ok` is false once the stream
//     is cut, even if gRPC delivered the message;
//   * override OnStreamDone instead of OnDone (final here); it runs after
//     the guard ended, where gRPC's OnDone would, and is where the reactor
//     is usually deleted;
//   * Finish(s) (server) sends `s`, or the stream's status if it was cut;
//     OnStreamDone(s) (client) receives gRPC's status, or the stream's if it
//     was cut;
//   * client: the wait for the response of a client-streaming call (after
//     StartWritesDone / StartWriteLast) is timed as a Read;
//   * client: start the call as usual on client_context(), e.g.
//     `stub->async()->Chat(reactor->client_context(), reactor)`, then
//     StartCall() (the bound one: it binds the guard to the call).
//
//   class Chat : public reqctx::streams::ServerBidiReactor<Req, Resp> {
//    public:
//     Chat(grpc::CallbackServerContext* sc, const StreamOptions& o)
//         : reqctx::streams::ServerBidiReactor<Req, Resp>(sc, o, "/pkg.Svc/Chat") {
//       StartRead(&req_);
//     }
//     void OnStreamReadDone(bool ok) override {
//       if (!ok) { Finish(grpc::Status::OK); return; }
//       resp_ = Handle(context(), req_);
//       StartWrite(&resp_);
//     }
//     void OnStreamWriteDone(bool ok) override {
//       if (!ok) { Finish(grpc::Status::OK); return; }   // cut: its status
//       StartRead(&req_);
//     }
//     void OnStreamDone() override { delete this; }
//    private:
//     Req req_; Resp resp_;
//   };
//
// Thread-safety: as gRPC's reactors (their callbacks may run on any gRPC
// thread; the guard's state is thread-safe). Callbacks must not throw.
// Lifetime: as gRPC's reactors; a server reactor's guard ends at Finish (or
// OnDone), a client reactor's at OnDone; the client reactor owns its
// ClientContext (keep the channel alive past OnStreamDone: releasing the
// last channel reference on gRPC's callback thread breaks gRPC 1.51's
// callback pool).
#ifndef REQCTX_STREAMS_CALLBACK_H_
#define REQCTX_STREAMS_CALLBACK_H_

#include <grpcpp/client_context.h>
#include <grpcpp/server_context.h>
#include <grpcpp/support/client_callback.h>
#include <grpcpp/support/server_callback.h>
#include <grpcpp/support/status.h>

#include <memory>
#include <string_view>

#include "context/core.h"
#include "interceptors/client_interceptor.h"
#include "streams/stream_guard.h"

namespace reqctx::streams {

namespace internal {

// The guard and Finish/OnDone of a server reactor `Base`.
template <typename Base>
class ServerBound : public Base {
 public:
  ServerBound(grpc::CallbackServerContext* sc, const StreamOptions& options,
              std::string_view method = {})
      : guard_(sc, options, method) {}

  const Context& context() const { return guard_.context(); }
  StreamGuard& guard() { return guard_; }

  // Ends the guard and sends `s`, or the stream's status if it was cut.
  void Finish(grpc::Status s) {
    guard_.CheckCallCancelled();
    guard_.End();
    Base::Finish(guard_.FinalStatus(s));
  }

 protected:
  // gRPC's OnDone, after the guard ended. Must not throw.
  virtual void OnStreamDone() = 0;

 private:
  void OnDone() final {
    guard_.End();
    OnStreamDone();
  }

  StreamGuard guard_;
};

// The guard, ClientContext and StartCall/OnDone of a client reactor `Base`.
template <typename Base>
class ClientBound : public Base {
 public:
  ClientBound(const Context& ctx, const StreamOptions& options,
              std::string_view method = {})
      : cc_(NewClientContext(ctx)), guard_(ctx, cc_.get(), options, method) {}

  const Context& context() const { return guard_.context(); }
  StreamGuard& guard() { return guard_; }
  // The ClientContext to start the call with.
  grpc::ClientContext* client_context() { return cc_.get(); }

  // Binds the guard to the call, then gRPC's StartCall. Call once, after
  // the stub's method.
  void StartCall() {
    guard_.BindClientCall();
    Base::StartCall();
  }

 protected:
  // gRPC's OnDone with its status, or the stream's if it was cut; after the
  // guard ended. Must not throw.
  virtual void OnStreamDone(const grpc::Status& s) = 0;

 private:
  void OnDone(const grpc::Status& s) final {
    guard_.End();
    OnStreamDone(guard_.FinalStatus(s));
  }

  std::unique_ptr<grpc::ClientContext> cc_;
  StreamGuard guard_;
};

// Bound StartRead / OnReadDone over `B` (a ServerBound or ClientBound).
template <typename B, typename Message>
class ReadHooks : public B {
 public:
  using B::B;
  void StartRead(Message* msg) {
    this->guard().ReadStarted();
    B::StartRead(msg);
  }

 protected:
  // gRPC's OnReadDone; `ok` is false once the stream is cut. Must not throw.
  virtual void OnStreamReadDone(bool ok) = 0;

 private:
  void OnReadDone(bool ok) final {
    OnStreamReadDone(this->guard().ReadDone(ok));
  }
};

// Bound StartWrite / OnWriteDone over `B`.
template <typename B, typename Message>
class WriteHooks : public B {
 public:
  using B::B;
  void StartWrite(const Message* msg) {
    this->guard().WriteStarted();
    B::StartWrite(msg);
  }
  void StartWrite(const Message* msg, grpc::WriteOptions options) {
    this->guard().WriteStarted();
    B::StartWrite(msg, options);
  }

 protected:
  // gRPC's OnWriteDone; `ok` is false once the stream is cut. Must not
  // throw.
  virtual void OnStreamWriteDone(bool ok) = 0;

 private:
  void OnWriteDone(bool ok) final {
    OnStreamWriteDone(this->guard().WriteDone(ok));
  }
};

// Bound StartWritesDone over `B`, for a client that only writes: after the
// half-close it waits for the response, timed as a Read (the message-wait
// timeout cuts a server that never answers). StartWriteLast is timed from
// its call, its write included.
template <typename B, typename Message>
class ResponseWaitHooks : public B {
 public:
  using B::B;
  void StartWritesDone() {
    this->guard().ReadStarted();
    B::StartWritesDone();
  }
  void StartWriteLast(const Message* msg, grpc::WriteOptions options) {
    this->guard().ReadStarted();
    B::StartWriteLast(msg, options);
  }
};

}  // namespace internal

// Server-streaming handler: writes `Response`s.
template <typename Response>
using ServerWriteReactor = internal::WriteHooks<
    internal::ServerBound<grpc::ServerWriteReactor<Response>>, Response>;
// Client-streaming handler: reads `Request`s.
template <typename Request>
using ServerReadReactor = internal::ReadHooks<
    internal::ServerBound<grpc::ServerReadReactor<Request>>, Request>;
// Bidirectional handler.
template <typename Request, typename Response>
using ServerBidiReactor = internal::WriteHooks<
    internal::ReadHooks<
        internal::ServerBound<grpc::ServerBidiReactor<Request, Response>>,
        Request>,
    Response>;

// Client of a server-streaming call: reads `Response`s.
template <typename Response>
using ClientReadReactor = internal::ReadHooks<
    internal::ClientBound<grpc::ClientReadReactor<Response>>, Response>;
// Client of a client-streaming call: writes `Request`s.
template <typename Request>
using ClientWriteReactor = internal::ResponseWaitHooks<
    internal::WriteHooks<
        internal::ClientBound<grpc::ClientWriteReactor<Request>>, Request>,
    Request>;
// Client of a bidirectional call.
template <typename Request, typename Response>
using ClientBidiReactor = internal::ReadHooks<
    internal::WriteHooks<
        internal::ClientBound<grpc::ClientBidiReactor<Request, Response>>,
        Request>,
    Response>;

}  // namespace reqctx::streams

#endif  // REQCTX_STREAMS_CALLBACK_H_
