// Completion-queue (async) API streams bound to a Context, with the
// message-wait and idle timeouts of stream_guard.h (read that first: what
// is bound, the statuses, the cost).
//
// On this API the application drives every operation with tags, so the
// binding is explicit: make a StreamGuard for the call -- server:
// StreamGuard(&server_context, options, method) once the request's tag is
// delivered; client: StreamGuard(ctx, cc, options, method) before the
// stub's PrepareAsync/Async call, then BindClientCall() right after it --
// and issue reads and writes through AsyncStream, reporting each tag's
// `ok` back:
//
//   reqctx::streams::AsyncStream ops(&guard, &responder);  // any async stream
//   ops.Read(&req, kReadTag);
//   ... cq.Next(&tag, &ok) ...
//   if (tag == kReadTag && !ops.ReadDone(ok)) { /* cut or peer done */ }
//
// When the stream is cut (its Context done, a timeout expired), the guard
// cancels the call: the pending tags come back with ok == false, and
// guard.FinalStatus(s) is the status to Finish with (server) or to report
// (client). Server: End() the guard before Finish (the call's Context is
// released when its status goes out, which must not be taken for a cut).
// A server Read that fails is either the client's half-close or the call's
// end; to tell them apart, once the AsyncNotifyWhenDone tag has arrived
// call guard.CheckCallCancelled(): FinalStatus then gives CANCELLED /
// DEADLINE_EXCEEDED for a call that was cancelled. The guard must be ended
// before the call's ServerContext / ClientContext is destroyed.
//
// Thread-safety: as gRPC's async streams (one read and one write
// outstanding at a time). Lifetime: AsyncStream holds two pointers; the
// guard and the stream must outlive it.
#ifndef REQCTX_STREAMS_ASYNC_CQ_H_
#define REQCTX_STREAMS_ASYNC_CQ_H_

#include <grpcpp/support/async_stream.h>

#include "streams/stream_guard.h"

namespace reqctx::streams {

// Stream: any of gRPC's async stream types (ServerAsyncReader[Writer],
// ServerAsyncWriter, ClientAsyncReader[Writer], ClientAsyncWriter...).
template <typename Stream>
class AsyncStream {
 public:
  AsyncStream(StreamGuard* guard, Stream* stream)
      : guard_(guard), stream_(stream) {}

  // gRPC's Read(msg, tag), timed from now.
  template <typename R>
    requires requires(Stream* s, R* m, void* t) { s->Read(m, t); }
  void Read(R* msg, void* tag) {
    guard_->ReadStarted();
    stream_->Read(msg, tag);
  }
  // The read's tag arrived with `ok`: ok && the stream is live.
  bool ReadDone(bool ok) { return guard_->ReadDone(ok); }
  // gRPC's Write(msg, tag).
  template <typename W>
    requires requires(Stream* s, const W& m, void* t) { s->Write(m, t); }
  void Write(const W& msg, void* tag) {
    guard_->WriteStarted();
    stream_->Write(msg, tag);
  }
  template <typename W>
    requires requires(Stream* s, const W& m, void* t) { s->Write(m, t); }
  void Write(const W& msg, grpc::WriteOptions options, void* tag) {
    guard_->WriteStarted();
    stream_->Write(msg, options, tag);
  }
  // The write's tag arrived with `ok`: ok && the stream is live.
  bool WriteDone(bool ok) { return guard_->WriteDone(ok); }
  // Client side: gRPC's Finish(status, tag), timed as a Read (the status
  // -- and a client-streaming call's response -- is the message it waits
  // for): the message-wait timeout cuts a peer that never answers. End()
  // the guard once the tag arrives.
  void Finish(grpc::Status* status, void* tag)
    requires requires(Stream* s, grpc::Status* st, void* t) {
      s->Finish(st, t);
    }
  {
    guard_->ReadStarted();
    stream_->Finish(status, tag);
  }

 private:
  StreamGuard* const guard_;
  Stream* const stream_;
};

}  // namespace reqctx::streams

#endif  // REQCTX_STREAMS_ASYNC_CQ_H_
