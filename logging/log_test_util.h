// Test helpers for the logging integrations: a real gRPC server on
// 127.0.0.1 with reqctx's interceptors and WithLogMethodRule, whose Echo
// handler runs a test's logging code, and a parser for the fields.
//
// Thread-safety: one test thread uses these. Lifetime: LogCall starts and
// stops its own server.
#ifndef REQCTX_LOGGING_LOG_TEST_UTIL_H_
#define REQCTX_LOGGING_LOG_TEST_UTIL_H_

#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace reqctx::logging::testing {

// What the client sent.
struct SentCall {
  std::string trace_id;   // The client's trace (the server keeps it).
  std::string span_id;    // The client's span (the server makes its own).
  absl::Duration timeout;  // The client's deadline, from its start.
};

// Serves echo.v1.Echo on a free loopback port with reqctx's server
// interceptors and WithLogMethodRule; makes one Echo call to it with a
// fresh trace and `timeout`, during which the handler runs `log` on its own
// thread (its Current() is the call's Context). The call's status: OK
// unless the server failed.
absl::Status LogCall(const std::function<void()>& log, absl::Duration timeout,
                     SentCall* sent);

// The fields of the first "trace_id=" in `line`: key -> value for
// trace_id, span_id, method, budget_ms (in that order); empty if they are
// not all there, in that order, separated by single spaces.
std::map<std::string, std::string> ParseFields(std::string_view line);

// Success if `line` has the fields of a line logged inside `sent`'s call on
// the server: its trace id, a span id of 16 hex digits other than the
// client's, method /echo.v1.Echo/Echo, and a budget in [0, sent.timeout].
::testing::AssertionResult HasCallFields(std::string_view line,
                                         const SentCall& sent);
// Success if `line` has the fields of a line logged outside any call:
// trace_id=- span_id=- method=- budget_ms=none.
::testing::AssertionResult HasNoCallFields(std::string_view line);

}  // namespace reqctx::logging::testing

#endif  // REQCTX_LOGGING_LOG_TEST_UTIL_H_
