#include "w3c/trace_propagation.h"

#include <pthread.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "w3c/header_rules.h"
#include "w3c/tracestate.h"

namespace reqctx::internal {
namespace {

inline constexpr Key<std::string> kTracestateKey("reqctx.tracestate");

// Bumped in a forked child (pthread_atfork). The per-thread generators are
// copied into the child with the rest of memory, so without a reseed the
// parent and the child would draw the same trace and span ids.
std::atomic<uint64_t> g_fork_generation{0};
const bool kForkHandlerInstalled = [] {
  return pthread_atfork(nullptr, nullptr, [] {
           g_fork_generation.fetch_add(1, std::memory_order_relaxed);
         }) == 0;
}();

// A generator seeded from the OS (std::random_device), mixed with the pid and
// the monotonic clock, so a forked child's seed differs from its parent's
// even where no OS entropy can be had. (absl's default seed comes from a
// process-wide pool that a child would inherit too.) absl::InsecureBitGen
// (PCG, 128 bits of state per thread): ids must be unpredictable enough
// not to collide, not secret (W3C Trace Context asks for random ids, not
// cryptographic ones), and every call draws one -- a span id per hop, a
// trace id per new trace -- so the generator costs a few instructions per
// id instead of Randen's few hundred (issue 20's call-cost profile).
absl::InsecureBitGen NewGenerator() {
  std::vector<uint32_t> seed = {
      static_cast<uint32_t>(getpid()),
      static_cast<uint32_t>(
          std::chrono::steady_clock::now().time_since_epoch().count())};
  try {
    std::random_device os;
    for (int i = 0; i < 8; ++i) seed.push_back(os());
  } catch (...) {  // No entropy source: the pid and clock still differ.
  }
  std::seed_seq seq(seed.begin(), seed.end());
  return absl::InsecureBitGen(seq);
}

struct Generator {
  uint64_t generation = g_fork_generation.load(std::memory_order_relaxed);
  absl::InsecureBitGen gen = NewGenerator();
};

uint64_t RandomNonZero() {
  thread_local Generator g;
  const uint64_t generation = g_fork_generation.load(std::memory_order_relaxed);
  if (g.generation != generation) {  // First use in a forked child.
    g.generation = generation;
    g.gen = NewGenerator();
  }
  uint64_t v = 0;
  while (v == 0) v = absl::Uniform<uint64_t>(g.gen);  // 0 has odds 2^-64.
  return v;
}

// Writes `v` as 16 lowercase hex digits at `out`. Ids are made on every call
// (a span id per hop, a trace id per new trace), so they are written in place
// rather than through StrCat and concatenation (one allocation per id, and
// the traceparent of a new trace in a single one).
// The two lowercase hex digits of each byte value, so an id is written a
// byte (two digits) per step.
constexpr std::array<char, 512> kHexPairs = [] {
  constexpr char kDigits[] = "0123456789abcdef";
  std::array<char, 512> t{};
  for (int i = 0; i < 256; ++i) {
    t[2 * i] = kDigits[i >> 4];
    t[2 * i + 1] = kDigits[i & 0xf];
  }
  return t;
}();

void WriteHex16(uint64_t v, char* out) {
  for (int i = 7; i >= 0; --i) {
    std::memcpy(out + 2 * i, &kHexPairs[2 * (v & 0xff)], 2);
    v >>= 8;
  }
}

// Both halves non-zero: trivially not all zeros, still 126 random bits.
void WriteNewTraceId(char* out) {
  WriteHex16(RandomNonZero(), out);
  WriteHex16(RandomNonZero(), out + 16);
}

}  // namespace

TraceId NewTraceId() {
  char id[32];
  WriteNewTraceId(id);
  return std::string_view(id, sizeof(id));
}

SpanId NewSpanId() {
  char id[16];
  WriteHex16(RandomNonZero(), id);
  return std::string_view(id, sizeof(id));
}

IncomingTrace ContinueTrace(const std::vector<std::string_view>& traceparents,
                            const std::vector<std::string_view>& tracestates) {
  return ContinueTraceOf(traceparents, tracestates);
}

IncomingTrace ContinueTraceOf(std::span<const std::string_view> traceparents,
                              std::span<const std::string_view> tracestates) {
  IncomingTrace in;
  std::optional<TraceContext> parent;
  // More than one traceparent is ambiguous: treat it as invalid.
  if (traceparents.size() == 1) parent = ParseTraceparent(traceparents[0]);
  if (!parent) {
    CountDroppedHeaders(DroppedHeader::kTraceparent, DropReason::kInvalid,
                        traceparents.size());
    in.trace.trace_id = NewTraceId();
    in.trace.span_id = NewSpanId();
    in.trace.sampled = true;
    return in;  // tracestate is meaningless without a valid traceparent.
  }
  in.trace.trace_id = parent->trace_id;
  in.trace.span_id = NewSpanId();  // This hop's own span.
  in.trace.sampled = parent->sampled;
  if (tracestates.empty()) return in;
  // Repeated tracestate headers form one comma-separated list (RFC 9110).
  std::string joined;
  std::string_view list = tracestates[0];
  if (tracestates.size() > 1) {
    size_t total = 0;
    for (std::string_view v : tracestates) total += v.size() + 1;
    joined.reserve(total);
    for (std::string_view v : tracestates) {
      if (!joined.empty()) joined.push_back(',');
      joined.append(v);
    }
    list = joined;
  }
  if (std::optional<std::string> ts = SanitizedTracestateOf(list)) {
    in.tracestate = std::move(*ts);
  }
  return in;
}

std::optional<std::string> SanitizedTracestateOf(std::string_view list) {
  SanitizedTracestate ts = SanitizeTracestate(list);
  CountDroppedHeaders(DroppedHeader::kTracestate, DropReason::kInvalid,
                      ts.invalid);
  CountDroppedHeaders(DroppedHeader::kTracestate, DropReason::kLimit,
                      ts.over_limit);
  if (ts.value.empty()) return std::nullopt;
  return std::move(ts.value);
}

Context WithTracestate(const Context& parent, std::string tracestate) {
  std::optional<std::string> ts = SanitizedTracestateOf(tracestate);
  if (!ts.has_value()) return parent;
  return WithValue(parent, kTracestateKey, std::move(*ts));
}

const std::string* GetTracestate(const Context& ctx) {
  return ctx.Value(kTracestateKey);
}

void WriteOutgoingTraceparent(const Context& ctx, std::string* out) {
  const TraceContext* tc = FindTraceContext(ctx);
  std::string& h = *out;
  if (tc == nullptr) {
    // A call made outside any trace starts one; the callee continues it.
    // Written in place: what FormatTraceparent would make of
    // TraceContext{NewTraceId(), NewSpanId(), /*sampled=*/true}.
    h.assign("00-................................-................-01");
    WriteNewTraceId(h.data() + 3);
    WriteHex16(RandomNonZero(), h.data() + 36);
    return;
  }
  // FormatTraceparent's, appended to the reused string.
  h.assign("00-");
  h.append(tc->trace_id);
  h.push_back('-');
  h.append(tc->span_id);
  h.append(tc->sampled ? "-01" : "-00");
}

OutgoingTrace OutgoingTraceFor(const Context& ctx) {
  OutgoingTrace out;
  out.traceparent.reserve(55);
  WriteOutgoingTraceparent(ctx, &out.traceparent);
  if (const std::string* ts = GetTracestate(ctx)) out.tracestate = *ts;
  return out;
}

}  // namespace reqctx::internal
