#include "drain/shutdown_signal.h"

#include <grpcpp/server.h>

#include <algorithm>

namespace reqctx::drain {

void ShutdownSignal::CancelsAt(absl::Time deadline) {
  const int64_t ns = absl::ToUnixNanos(deadline);
  int64_t seen = cancel_at_ns_.load(std::memory_order_relaxed);
  while (ns < seen && !cancel_at_ns_.compare_exchange_weak(
                          seen, ns, std::memory_order_relaxed)) {
  }
}

bool ShutdownSignal::Canceling(absl::Time now) const {
  const int64_t at = cancel_at_ns_.load(std::memory_order_relaxed);
  if (at == std::numeric_limits<int64_t>::max()) return false;
  return now + kShutdownSlack >= absl::FromUnixNanos(at);
}

void ShutdownServer(grpc::Server& server, ShutdownSignal& signal,
                    absl::Time deadline) {
  signal.CancelsAt(deadline);
  server.Shutdown(absl::ToChronoTime(deadline));
}

}  // namespace reqctx::drain
