// docs/stopping-io.md "The waits, whole": a poll() on a socket that also
// ends when the Context is done, Select over two Contexts, a condition
// variable wait bounded by a Context, and std::stop_token both ways.
// Compiled and run by CI.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stop_token>

#include "context/context.h"  // build dep: //context

int main() {
  int sv[2];  // a socket nobody writes to: without the Context, poll() waits forever
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;

  auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(50));
  absl::StatusOr<reqctx::DoneFd> done = reqctx::DoneFd::Open(ctx);
  if (!done.ok()) return 1;
  pollfd fds[2] = {{sv[0], POLLIN, 0}, {done->fd(), POLLIN, 0}};
  poll(fds, 2, -1);  // returns at the deadline
  bool woke_by_ctx = (fds[1].revents & POLLIN) != 0 && (fds[0].revents & POLLIN) == 0;

  // Which ends first: the request or the server's shutdown?
  auto [shutdown, stop_server] = reqctx::WithCancel(reqctx::Background());
  std::optional<size_t> first = reqctx::Select({shutdown, ctx}, absl::Seconds(1));  // 1: ctx

  // A condition-variable wait that also ends with the Context.
  std::mutex mu;
  std::condition_variable cv;
  bool ready = false;
  std::unique_lock<std::mutex> lock(mu);
  bool got = reqctx::Wait(ctx, cv, lock, [&] { return ready; });  // false: ctx is done

  // std::stop_token, both ways.
  std::stop_token token = reqctx::StopTokenOf(ctx);  // stop_requested(): ctx is done
  std::stop_source source;
  auto [child, cancel_child] = reqctx::WithStopToken(reqctx::Background(), source.get_token());
  source.request_stop();  // cancels `child`

  std::printf("poll woke by the Context: %s; Select: %zu; Wait: %s; token: %s; child: %s\n",
              woke_by_ctx ? "yes" : "no", first.value_or(99), got ? "true" : "false",
              token.stop_requested() ? "stop requested" : "live",
              child.Err().ToString().c_str());
  close(sv[0]);
  close(sv[1]);
  return woke_by_ctx && first == 1 && !got && token.stop_requested() && child.IsDone() ? 0 : 1;
}
