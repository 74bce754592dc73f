// README "A tour": one request's Context carries a deadline and a value to
// its workers, and stops them all when the deadline passes.
#include <cstdio>
#include <string>

#include "context/context.h"  // namespace reqctx; build dep: //context

inline constexpr reqctx::Key<std::string> kUserKey("user");

// The Context is the first parameter, passed along the call, never stored.
absl::Status Fetch(const reqctx::Context& ctx, int shard) {
  const std::string* user = ctx.Value(kUserKey);  // request-scoped data only
  if (user == nullptr) return absl::InvalidArgumentError("no user");
  // Shard 2 is slow: the deadline cuts its 10 s short.
  return reqctx::SleepFor(ctx, absl::Milliseconds(shard == 2 ? 10'000 : 5));
}

int main() {
  // A request with a 200 ms budget, on behalf of "ada". Keep `cancel`: the
  // Context is canceled when the last copy of it is destroyed.
  auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), absl::Milliseconds(200));
  reqctx::Context req = reqctx::WithValue(ctx, kUserKey, std::string("ada"));

  reqctx::Group g(req);  // Go's errgroup: the first error cancels the rest
  for (int shard = 0; shard < 3; ++shard) {
    g.Go([shard](const reqctx::Context& task_ctx) { return Fetch(task_ctx, shard); });
  }
  absl::Status first = g.Wait();  // after ~200 ms, not 10 s

  auto [child, cancel_child] = reqctx::WithCancel(req);  // done at birth, as req is
  std::printf("group: %s\nchild: %s\n", first.ToString().c_str(),
              child.Err().ToString().c_str());
  return first.code() == absl::StatusCode::kDeadlineExceeded && child.IsDone() ? 0 : 1;
}
