// libFuzzer target for ParseTraceparent (w3c/traceparent.h).
//
// Besides "never crash, never read out of bounds" (ASan/UBSan in the clang
// build, tools/fuzz_traceparent.sh), every input is checked against:
//   1. an independent reference of the W3C grammar (version 00, and later
//      versions read by the version-00 rules), written
//      differently from the parser (per-position character classes), so a
//      parser that accepts or rejects the wrong headers is caught;
//   2. the round-trip property: whatever parses formats back to the same
//      header as version 00 (a later version's extra fields dropped) --
//      exactly when it is version 00 with flags 00 or 01; for other flags W3C
//      (level 1, "Other Flags") says unknown bits MUST be set to zero, so the
//      header comes back with only bit 0 kept (flags "01" or "00") and is
//      otherwise byte-identical; and the formatted header parses to the same
//      TraceContext (idempotence).
// A violation calls __builtin_trap(), which libFuzzer reports as a crash and
// the gcc-built regression test (traceparent_corpus_test) as a signal.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "w3c/header_rules.h"
#include "w3c/traceparent.h"
#include "w3c/tracestate.h"

namespace {

bool IsLowerHex(char c) {
  return std::string_view("0123456789abcdef").find(c) != std::string_view::npos;
}

// The W3C grammar, position by position: version 00 is exactly 55
// characters; a later version (two lowercase hex digits, not "ff") is read by
// the version-00 rules when it is at least that long, and whatever follows
// the flags must begin with '-' (W3C Trace Context level 1, "Versioning of
// traceparent").
bool ReferenceAccepts(std::string_view h) {
  if (h.size() < 55) return false;
  if (!IsLowerHex(h[0]) || !IsLowerHex(h[1])) return false;
  const bool version_00 = h[0] == '0' && h[1] == '0';
  if (h[0] == 'f' && h[1] == 'f') return false;
  if (version_00 && h.size() != 55) return false;
  if (!version_00 && h.size() > 55 && h[55] != '-') return false;
  bool trace_nonzero = false;
  bool span_nonzero = false;
  for (size_t i = 2; i < 55; ++i) {
    const char c = h[i];
    if (i == 2 || i == 35 || i == 52) {
      if (c != '-') return false;
    } else {
      if (!IsLowerHex(c)) return false;
      if (i < 35) trace_nonzero |= c != '0';
      if (i > 35 && i < 52) span_nonzero |= c != '0';
    }
  }
  return trace_nonzero && span_nonzero;
}

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

// The same input as a tracestate (w3c/tracestate.h): whatever came in, what
// is kept is legal on gRPC's wire (bytes 0x20-0x7E), within W3C's limits,
// and kept as it is when sanitized again; a smaller bound keeps a prefix of
// members in the same order.
void CheckTracestate(std::string_view header) {
  const reqctx::SanitizedTracestate s = reqctx::SanitizeTracestate(header);
  Check(reqctx::IsLegalGrpcHeaderValue(s.value));
  Check(s.value.size() <= reqctx::kMaxTracestateBytes);
  size_t members = s.value.empty() ? 0 : 1;
  for (char c : s.value) members += c == ',';
  Check(members <= reqctx::kMaxTracestateMembers);
  const reqctx::SanitizedTracestate again = reqctx::SanitizeTracestate(s.value);
  Check(again.value == s.value && again.invalid == 0 && again.over_limit == 0);
  const reqctx::SanitizedTracestate small =
      reqctx::SanitizeTracestate(s.value, s.value.size() / 2);
  Check(small.value.size() <= s.value.size() / 2);
  Check(reqctx::SanitizeTracestate(small.value).value == small.value);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view header(reinterpret_cast<const char*>(data), size);
  CheckTracestate(header);
  const std::optional<reqctx::TraceContext> tc =
      reqctx::ParseTraceparent(header);
  Check(tc.has_value() == ReferenceAccepts(header));
  if (!tc) return 0;

  Check(tc->trace_id == header.substr(3, 32));
  Check(tc->span_id == header.substr(36, 16));
  const int flags_low_digit =
      header[54] <= '9' ? header[54] - '0' : header[54] - 'a' + 10;
  Check(tc->sampled == ((flags_low_digit & 1) != 0));

  // Passed on as version 00, the same ids, only the sampled flag.
  const std::string formatted = reqctx::FormatTraceparent(*tc);
  const std::string canonical = "00" + std::string(header.substr(2, 51)) +
                                (tc->sampled ? "01" : "00");
  Check(formatted == canonical);
  const std::string_view flags = header.substr(53, 2);
  if (header.substr(0, 2) == "00" && (flags == "00" || flags == "01")) {
    Check(formatted == header);
  }

  const std::optional<reqctx::TraceContext> again =
      reqctx::ParseTraceparent(formatted);
  Check(again.has_value());
  Check(again->trace_id == tc->trace_id && again->span_id == tc->span_id &&
        again->sampled == tc->sampled);
  return 0;
}
