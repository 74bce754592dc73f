// DoneFd: a Context as a file descriptor, for event loops and C libraries
// that wait on sockets (poll/epoll/io_uring, libcurl's multi interface,
// libpq): wait for "socket ready or context done" in one call.
//
//   absl::StatusOr<DoneFd> done = DoneFd::Open(ctx);
//   pollfd fds[2] = {{sock, POLLIN, 0}, {done->fd(), POLLIN, 0}};
//   poll(fds, done->fd() < 0 ? 1 : 2, -1);  // fds[1] readable: ctx is done.
//
// The descriptor is an eventfd, created on the first Open for a context and
// shared by every DoneFd of that context (and of contexts derived from it by
// WithValue only: they share its cancel layer). It becomes readable (POLLIN,
// EPOLLIN) once the context is done, and stays readable: never read from it,
// write to it or close it. A context that can never be done (Background,
// TODO, WithoutCancel chains) gets no descriptor at all: fd() is -1, which
// poll() ignores. Contexts that never ask pay nothing: the core has no field
// for this; a side table maps a context to its live descriptor.
//
// Thread-safety: Open and every method may be called from any thread; a
// DoneFd is a cheap copyable handle (one shared pointer).
// Lifetime: the descriptor stays open while any DoneFd handle for it exists
// and is closed with the last one (a handle keeps its context alive). Do
// not use fd() after the handles are gone: the number may be reused.
#ifndef REQCTX_CONTEXT_WAITABLE_H_
#define REQCTX_CONTEXT_WAITABLE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "context/core.h"

namespace reqctx {

namespace internal {
class DoneFdState;
}  // namespace internal

class DoneFd {
 public:
  DoneFd() = default;  // No descriptor: fd() == -1 (never done).

  // The descriptor of `ctx`: an existing one if a handle for it is alive,
  // else a new eventfd (already readable if `ctx` is done). A context that
  // can never be done yields a DoneFd with fd() == -1. Fails with
  // kResourceExhausted (and the errno text) only when no eventfd can be
  // created (descriptor or memory limits).
  static absl::StatusOr<DoneFd> Open(const Context& ctx);

  // The eventfd (non-blocking, close-on-exec), readable once the context is
  // done; -1 if the context can never be done.
  int fd() const;
  // True once the context is done (the same as ctx.Done().IsDone()).
  bool IsDone() const;

 private:
  explicit DoneFd(std::shared_ptr<internal::DoneFdState> state)
      : state_(std::move(state)) {}
  std::shared_ptr<internal::DoneFdState> state_;
};

}  // namespace reqctx

#endif  // REQCTX_CONTEXT_WAITABLE_H_
