#include "metrics/call_log.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "metrics/rpc_metrics.h"

namespace reqctx {
namespace {

std::atomic<CallLogSink*> g_sink{nullptr};

void AppendJsonString(std::string_view s, std::string& out) {
  out.push_back('"');
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20 || u >= 0x7f) {
      // Control bytes, and bytes that may not be valid UTF-8, escaped.
      absl::StrAppend(&out, absl::StrFormat("\\u%04x", u));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

void AppendSeconds(absl::Duration d, std::string& out) {
  absl::StrAppend(&out, absl::StrFormat("%.9g", absl::ToDoubleSeconds(d)));
}

class JsonLinesSink final : public CallLogSink {
 public:
  explicit JsonLinesSink(FILE* f) : f_(f) {}
  void Write(const CallLogRecord& r) override {
    std::string line = FormatCallLogJson(r);
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), f_);
  }

 private:
  FILE* const f_;
};

}  // namespace

std::string FormatCallLogJson(const CallLogRecord& r) {
  std::string out = "{\"side\":";
  AppendJsonString(r.side, out);
  out += ",\"method\":";
  AppendJsonString(r.method, out);
  out += ",\"code\":";
  AppendJsonString(metrics::CodeName(r.code), out);
  out += ",\"trace_id\":";
  AppendJsonString(r.trace_id, out);
  out += ",\"span_id\":";
  AppendJsonString(r.span_id, out);
  out += ",\"parent_span_id\":";
  AppendJsonString(r.parent_span_id, out);
  out += ",\"deadline_at_arrival_s\":";
  if (r.deadline_at_arrival.has_value()) {
    AppendSeconds(*r.deadline_at_arrival, out);
  } else {
    out += "null";
  }
  out += ",\"duration_s\":";
  AppendSeconds(r.duration, out);
  out += ",\"orphaned_s\":";
  AppendSeconds(r.orphaned, out);
  if (r.budget_consumed.has_value()) {
    out += ",\"budget_consumed_s\":";
    AppendSeconds(*r.budget_consumed, out);
  }
  out += ",\"cause\":";
  AppendJsonString(r.cause, out);
  out.push_back('}');
  return out;
}

void SetCallLogSink(CallLogSink* sink) { g_sink.store(sink); }

CallLogSink* GetCallLogSink() {
  return g_sink.load(std::memory_order_acquire);
}

CallLogSink* JsonLinesCallLogSink(FILE* file) { return new JsonLinesSink(file); }

CallLogSink* StderrJsonCallLogSink() {
  static CallLogSink* const sink = new JsonLinesSink(stderr);
  return sink;
}

}  // namespace reqctx
