// What a forwarded header may carry on gRPC's wire, and how many forwarded
// headers (or list members) reqctx dropped instead of sending. Free of gRPC
// and of //context, so the codecs' fuzz targets can assert their output
// against these rules.
//
// gRPC 1.51 refuses a call (GRPC_CALL_ERROR_INVALID_METADATA; the C++ API
// then aborts the process) whose metadata has a key outside [0-9a-z-_.]
// (or empty), or a value of a key not ending in "-bin" with a byte outside
// 0x20-0x7E (src/core/lib/surface/validate_metadata.cc). Every header reqctx
// forwards is checked against these rules before it is sent.
//
// Drop counters: process-wide, monotonic, one per (header, reason). A list
// header (tracestate, baggage) counts each member it loses; any other header
// counts once per header. Incoming headers reqctx reads and ignores when
// malformed (Envoy's x-envoy-expected-rq-timeout-ms, when the server says
// Envoy is in front) are counted here too, once per value ignored. Exposed as the Prometheus family
// reqctx_dropped_headers_total{header,reason} once EnableRpcMetrics() has run.
//
// Thread-safety: all functions are safe from any thread (relaxed atomics).
// Ownership: no state but the counters, which live for the process.
#ifndef REQCTX_W3C_HEADER_RULES_H_
#define REQCTX_W3C_HEADER_RULES_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace reqctx {

// True if gRPC accepts `key` as a metadata key: non-empty, only lowercase
// letters, digits, '-', '_' and '.'.
bool IsLegalGrpcHeaderKey(std::string_view key);
// True if gRPC accepts `value` for a key not ending in "-bin": every byte in
// 0x20-0x7E (printable ASCII and space). An empty value is legal.
bool IsLegalGrpcHeaderValue(std::string_view value);
// True if `key` ends in "-bin" (its values are binary and never checked).
bool IsBinaryHeaderKey(std::string_view key);

// The headers the drop counters are kept for.
enum class DroppedHeader : uint8_t {
  kTraceparent,
  kTracestate,
  kBaggage,
  kOther,  // Any other outgoing header with an illegal key or value.
  // An incoming x-envoy-expected-rq-timeout-ms that is not a decimal count
  // of milliseconds (interceptors: ServerCallRules::behind_envoy).
  kEnvoyExpectedTimeout,
};
inline constexpr size_t kDroppedHeaderKinds = 5;

// Why it was dropped.
enum class DropReason : uint8_t {
  kInvalid,  // Not in the header's grammar, or bytes gRPC refuses.
  kLimit,    // Over the format's own limits (W3C: members, bytes).
  kBudget,   // Over the outbound header budget (client_interceptor.h).
};
inline constexpr size_t kDropReasons = 3;

// Adds `n` to the counter of (`header`, `reason`).
void CountDroppedHeaders(DroppedHeader header, DropReason reason,
                         uint64_t n = 1);
// The counter's value since the process started.
uint64_t DroppedHeaderCount(DroppedHeader header, DropReason reason);

// The Prometheus label values: "traceparent", "tracestate", "baggage",
// "other", "x-envoy-expected-rq-timeout-ms"; "invalid", "limit", "budget".
std::string_view DroppedHeaderLabel(DroppedHeader header);
std::string_view DropReasonLabel(DropReason reason);

}  // namespace reqctx

#endif  // REQCTX_W3C_HEADER_RULES_H_
