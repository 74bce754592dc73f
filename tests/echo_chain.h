// Test helper: a frontend -> middle -> backend chain of in-process echo
// servers on free loopback ports, plus small helpers shared by the echo
// end-to-end tests.
//
// Thread-safety: the servers are thread-safe; the EchoChain object itself is
// owned by one test. Lifetime: the destructor shuts the servers down
// (frontend first), canceling any call still in flight.
#ifndef REQCTX_TESTS_ECHO_CHAIN_H_
#define REQCTX_TESTS_ECHO_CHAIN_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "services/echo/echo_stats.h"
#include "tests/test_timing.h"

namespace reqctx::testing {

// Every wait in the tests is bounded by this (generous for TSan); a test
// that hits it fails instead of hanging.
inline constexpr absl::Duration kWaitBound = absl::Seconds(20);

// How soon a cancel must reach a handler's Context (sync handlers poll every
// 5 ms; three hops take a few polls). Twenty times wider under the
// sanitizers, which slow every hop (1.05 s seen under TSan on a 2-core
// machine at load 11); the property asserted is the same.
inline constexpr absl::Duration kPromptBound =
    reqctx::testing::PlainOrSanitized(absl::Milliseconds(100), absl::Seconds(2));

class EchoChain {
 public:
  // Starts backend, middle and frontend; check status() before use.
  // `configure_frontend`, if set, edits the frontend's options last.
  explicit EchoChain(
      int workers = 2,
      std::function<void(echo::EchoServerOptions&)> configure_frontend = {});
  ~EchoChain();

  const absl::Status& status() const { return status_; }
  echo::EchoServer& frontend() const { return *frontend_; }
  echo::EchoServer& middle() const { return *middle_; }
  echo::EchoServer& backend() const { return *backend_; }

  // Waits (bounded) until no hop has an active request or worker.
  bool WaitAllIdle() const;

 private:
  absl::Status status_;
  std::unique_ptr<echo::EchoServer> backend_, middle_, frontend_;
};

// A stub for `server` on a reqctx channel (client interceptor installed).
std::unique_ptr<::echo::v1::Echo::Stub> NewStub(const echo::EchoServer& server);

bool IsIdle(const echo::EchoStats::Snapshot& s);

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_ECHO_CHAIN_H_
