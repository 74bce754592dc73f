// Log lines that carry the request: the fields a log line gets from the
// Context current on the thread that writes it (context/current.h), so logs
// can be joined with traces and with the per-call JSON log
// (metrics/call_log.h), which uses the same names.
//
//   trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7
//   method=/echo.v1.Echo/Echo budget_ms=1234
//
// Outside any request (Current() is Background()) every field is "-" and
// budget_ms is "none": the four keys are always there, in this order, so a
// line parses the same way in and out of a call. The logging-library
// integrations put this text in each line: logging/spdlog.h (a pattern
// flag) and logging/glog.h (glog's prefix).
//
// Where the fields come from:
//   * trace_id, span_id: the Context's TraceContext (w3c/trace_context.h),
//     which the server glue sets for every call (this hop's span); as
//     WithTraceContext does not validate, each is logged as the method is
//     (bytes outside 0x21-0x7E as '?', cut to kMaxLogIdBytes), so every
//     field is one token whatever a caller put in it;
//   * method: set by WithLogMethod, which the server rule made by
//     WithLogMethodRule runs for every call (install it with the server's
//     interceptors); a Context without one logs "-";
//   * budget_ms: the time left to the Context's deadline when the line is
//     written, in whole milliseconds (0 once it has passed); "none" with no
//     deadline.
// A sync handler's thread has its call's Context current for the handler's
// duration (interceptors/server_interceptor.h). Work on other threads (a
// Group's workers, callback and async handlers) logs with the fields only
// inside a ScopedContext of its Context.
//
// Thread-safety: every function is safe from any thread. Lifetime: the
// method names are interned for the process (at most kMaxLogMethods distinct
// names; later ones log as "(other)"), so a string_view from LogMethodOf
// stays valid forever.
#ifndef REQCTX_LOGGING_LOG_CONTEXT_H_
#define REQCTX_LOGGING_LOG_CONTEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "context/core.h"
#include "interceptors/server_interceptor.h"

namespace reqctx::logging {

// Distinct method names kept; more (a client inventing paths) log as
// "(other)", so hostile calls cannot grow the table without bound.
inline constexpr size_t kMaxLogMethods = 1024;
// Longest method name kept; longer ones are cut to this many bytes.
inline constexpr size_t kMaxLogMethodBytes = 256;
// Longest trace or span id logged (a valid one has 32 or 16 hex digits);
// longer ones are cut to this many bytes.
inline constexpr size_t kMaxLogIdBytes = 64;

// A child of `parent` that logs `method` (e.g. "/echo.v1.Echo/Echo") as its
// method. Bytes outside printable ASCII (0x21-0x7E) become '?' and the name
// is cut to kMaxLogMethodBytes, so the field is one token whatever a client
// sent.
Context WithLogMethod(const Context& parent, std::string_view method);
// The method WithLogMethod put in `ctx` or an ancestor, or "" if none.
std::string_view LogMethodOf(const Context& ctx);

// `rules` with a `values` step added that runs WithLogMethod for every call
// (after the step `rules` had, if any): install the result, e.g.
// InstallServerInterceptorsWithRules(builder,
//     WithLogMethodRule(policy.CallRules())).
ServerCallRules WithLogMethodRule(ServerCallRules rules);

// Appends `ctx`'s fields (the format above, no leading or trailing space)
// to `out`. Allocates only to grow `out`.
void AppendLogFields(const Context& ctx, std::string* out);
// AppendLogFields(Current(), ...) into a new string.
std::string CurrentLogFields();

}  // namespace reqctx::logging

#endif  // REQCTX_LOGGING_LOG_CONTEXT_H_
