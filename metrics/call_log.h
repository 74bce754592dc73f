// An optional structured log line per finished call, through a small sink
// interface (Debian's abseil 20220623 has no absl/log; an OpenTelemetry
// exporter could implement CallLogSink later).
//
//   reqctx::SetCallLogSink(reqctx::StderrJsonCallLogSink());
//
// The gRPC glue builds a CallLogRecord for every finished call (server and
// client side) only while a sink is set; with none set the cost is one
// atomic load per call.
//
// Thread-safety: Write may be called from many threads at once; sinks must
// be thread-safe. Lifetime: a sink given to SetCallLogSink must live until
// the process exits (calls in flight may still use it after it is replaced);
// the sinks made here are never destroyed.
#ifndef REQCTX_METRICS_CALL_LOG_H_
#define REQCTX_METRICS_CALL_LOG_H_

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "absl/time/time.h"

namespace reqctx {

struct CallLogRecord {
  std::string_view side;            // "server" or "client".
  std::string_view method;          // e.g. "/echo.Echo/Echo".
  int code = 0;                     // Final status code (0..16).
  std::string_view trace_id;        // 32 hex digits, or "".
  std::string_view span_id;         // This hop's span (server) or "".
  std::string_view parent_span_id;  // The caller's span, or "".
  // Time left until the deadline when the call arrived (server) or started
  // (client); nullopt if it had none.
  std::optional<absl::Duration> deadline_at_arrival;
  absl::Duration duration;
  // Server: time from its Context being done to the handler returning (0 if
  // the handler returned first).
  absl::Duration orphaned;
  // Why the call's Context ended: a CauseName of ledger/causes.h
  // ("CALLER_DEADLINE", "CLIENT_CANCEL", ...), "NONE" if it was live when
  // the call ended or ended with no reqctx cause.
  std::string_view cause = "NONE";
  // Server: this hop's own share of the call's budget -- time queued in a
  // load shedder plus the handler's own work, without the time it waited
  // on outbound calls (the budget ledger's, ledger/ledger.h); nullopt when
  // not known (client lines).
  std::optional<absl::Duration> budget_consumed;
};

class CallLogSink {
 public:
  virtual ~CallLogSink() = default;
  // Called once per finished call, on the thread that finished it; must be
  // quick and must not throw.
  virtual void Write(const CallLogRecord& record) = 0;
};

// One JSON object (no newline) for `r`:
// {"side":"server","method":"/echo.Echo/Echo","code":"OK","trace_id":"...",
//  "span_id":"...","parent_span_id":"...","deadline_at_arrival_s":0.25,
//  "duration_s":0.0012,"orphaned_s":0,"budget_consumed_s":0.0009,
//  "cause":"NONE"}
// deadline_at_arrival_s is null without a deadline; budget_consumed_s is
// present only when known (server lines); strings are escaped.
std::string FormatCallLogJson(const CallLogRecord& r);

// Installs `sink` (nullptr: off).
void SetCallLogSink(CallLogSink* sink);
// The current sink or nullptr.
CallLogSink* GetCallLogSink();

// A sink writing FormatCallLogJson lines to `file` (one fwrite per line, so
// lines from different threads do not interleave). Never destroyed.
CallLogSink* JsonLinesCallLogSink(FILE* file);
// JsonLinesCallLogSink(stderr).
CallLogSink* StderrJsonCallLogSink();

}  // namespace reqctx

#endif  // REQCTX_METRICS_CALL_LOG_H_
