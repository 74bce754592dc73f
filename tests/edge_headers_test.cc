// Issue 19, A1-A3, unit level: tracestate validation and trimming
// (w3c/tracestate.h), gRPC's header rules (w3c/header_rules.h), the outbound
// header budget (interceptors/internal/outbound_headers.h) and the
// grpc-timeout compensation (interceptors/internal/grpc_timeout.h).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/test_timing.h"
#include "interceptors/client_interceptor.h"
#include "interceptors/internal/grpc_timeout.h"
#include "interceptors/internal/outbound_headers.h"
#include "interceptors/observability.h"
#include "metrics/metrics.h"
#include "w3c/baggage.h"
#include "w3c/header_rules.h"
#include "w3c/tracestate.h"

namespace reqctx {
namespace {

using Metadata = std::multimap<std::string, std::string>;

constexpr char kTraceparent[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------------------
// gRPC's header rules

TEST(HeaderRules, ValuesAreLegalOnlyInPrintableAscii) {
  EXPECT_TRUE(IsLegalGrpcHeaderValue(""));
  EXPECT_TRUE(IsLegalGrpcHeaderValue(" a=1, ~!"));
  for (int c = 0; c < 256; ++c) {
    const std::string v(1, static_cast<char>(c));
    EXPECT_EQ(IsLegalGrpcHeaderValue(v), c >= 0x20 && c <= 0x7e) << c;
  }
}

// The word-at-a-time path (eight bytes per step) and the tail: every byte
// value at every position of a longer value, among legal bytes at both ends
// of the legal range.
TEST(HeaderRules, ValuesAreCheckedAtEveryPosition) {
  for (const char fill : {' ', '~', 'a'}) {
    for (size_t pos = 0; pos < 19; ++pos) {
      for (int c = 0; c < 256; ++c) {
        std::string v(19, fill);
        v[pos] = static_cast<char>(c);
        EXPECT_EQ(IsLegalGrpcHeaderValue(v), c >= 0x20 && c <= 0x7e)
            << "byte " << c << " at " << pos;
      }
    }
  }
  EXPECT_TRUE(IsLegalGrpcHeaderValue(kTraceparent));
}

TEST(HeaderRules, Keys) {
  EXPECT_TRUE(IsLegalGrpcHeaderKey("x-user_id.v2"));
  EXPECT_FALSE(IsLegalGrpcHeaderKey(""));
  EXPECT_FALSE(IsLegalGrpcHeaderKey("X-Upper"));
  EXPECT_FALSE(IsLegalGrpcHeaderKey(":path"));
  EXPECT_FALSE(IsLegalGrpcHeaderKey("a b"));
  EXPECT_TRUE(IsBinaryHeaderKey("trace-bin"));
  EXPECT_FALSE(IsBinaryHeaderKey("-bi"));
}

TEST(HeaderRules, DropsAreAPrometheusFamily) {
  EnableRpcMetrics();
  CountDroppedHeaders(DroppedHeader::kTracestate, DropReason::kInvalid, 2);
  const std::string text = metrics::Registry::Default().Expose();
  EXPECT_NE(text.find("# TYPE reqctx_dropped_headers_total counter"),
            std::string::npos);
  const std::string sample = absl::StrCat(
      "reqctx_dropped_headers_total{header=\"tracestate\",reason=\"invalid\"} ",
      DroppedHeaderCount(DroppedHeader::kTracestate, DropReason::kInvalid));
  EXPECT_NE(text.find(sample), std::string::npos) << text;
  EXPECT_NE(text.find("reqctx_dropped_headers_total{header=\"baggage\","
                      "reason=\"budget\"}"),
            std::string::npos);
}

// ---------------------------------------------------------------------------
// tracestate

TEST(SanitizeTracestate, KeepsValidMembersCanonically) {
  EXPECT_EQ(SanitizeTracestate("congo=t61rcWkgMzE").value, "congo=t61rcWkgMzE");
  EXPECT_EQ(SanitizeTracestate(" a=1 ,\tb=2\t, ,,c@sys=x y").value,
            "a=1,b=2,c@sys=x y");
  EXPECT_EQ(SanitizeTracestate("").value, "");
  EXPECT_EQ(SanitizeTracestate(" , ").value, "");
}

TEST(SanitizeTracestate, DropsEachInvalidMemberAndKeepsTheRest) {
  struct Case {
    std::string in;
    std::string out;
    size_t invalid;
  };
  const std::vector<Case> cases = {
      {"ok=1,a=1\tb", "ok=1", 1},                    // TAB inside a value.
      {"ok=1,a=caf\xc3\xa9", "ok=1", 1},             // UTF-8.
      {"ok=1,a=1\x7f", "ok=1", 1},                   // DEL.
      {std::string("ok=1,a=\0b", 9), "ok=1", 1},     // NUL.
      {"ok=1,a=1\r\nx: y", "ok=1", 1},               // CR LF.
      {"A=1,ok=1", "ok=1", 1},                       // Uppercase key.
      {"1a=1,ok=1", "ok=1", 1},                      // Digit first (simple).
      {"ok=1,a==1", "ok=1", 1},                      // '=' in value.
      {"ok=1,a=", "ok=1", 1},                        // Empty value.
      {"ok=1,a=x ", "ok=1,a=x", 0},                  // Trailing OWS trimmed.
      {"ok=1,a", "ok=1", 1},                         // No '='.
      {"ok=1,ok=2", "ok=1", 1},                      // Repeated key.
      {"t@s=1,1t@s=2,t@1s=3", "t@s=1,1t@s=2", 1},    // Tenant / system.
      {"t@abcdefghijklmno=1,t@abcdefghijklmn=2", "t@abcdefghijklmn=2", 1},
  };
  for (const Case& c : cases) {
    SanitizedTracestate s = SanitizeTracestate(c.in);
    EXPECT_EQ(s.value, c.out) << c.in;
    EXPECT_EQ(s.invalid, c.invalid) << c.in;
    EXPECT_TRUE(IsLegalGrpcHeaderValue(s.value));
  }
  EXPECT_TRUE(IsValidTracestateKey(std::string(256, 'a')));
  EXPECT_FALSE(IsValidTracestateKey(std::string(257, 'a')));
  EXPECT_TRUE(IsValidTracestateValue(std::string(256, 'v')));
  EXPECT_FALSE(IsValidTracestateValue(std::string(257, 'v')));
}

TEST(SanitizeTracestate, AtMost32MembersTheFirstOnes) {
  std::string in;
  for (int i = 0; i < 40; ++i) absl::StrAppend(&in, i ? "," : "", "k", i, "=v");
  SanitizedTracestate s = SanitizeTracestate(in);
  EXPECT_EQ(s.over_limit, 8u);
  EXPECT_EQ(s.value.find("k32="), std::string::npos);
  EXPECT_NE(s.value.find("k31=v"), std::string::npos);
  EXPECT_EQ(s.value.rfind("k0=v", 0), 0u);
}

TEST(SanitizeTracestate, TrimsByW3CRulesLongMembersFirstThenFromTheRight) {
  const std::string long1 = "l1=" + std::string(200, 'x');  // > 128.
  const std::string long2 = "l2=" + std::string(200, 'y');
  const std::string small = "s=" + std::string(100, 'z');
  // 203 + 1 + 102 + 1 + 203 + 1 + 102 = 613 > 512: the long members go
  // from the right until it fits (l2 is enough).
  SanitizedTracestate s =
      SanitizeTracestate(long1 + "," + small + "," + long2 + ",t=1");
  EXPECT_EQ(s.value, long1 + "," + small + ",t=1");
  EXPECT_EQ(s.over_limit, 1u);
  // A smaller bound: all long ones go first, then from the right.
  s = SanitizeTracestate(long1 + "," + small + "," + long2 + ",t=1", 106);
  EXPECT_EQ(s.value, small + ",t=1");
  s = SanitizeTracestate(long1 + "," + small + "," + long2 + ",t=1", 100);
  EXPECT_EQ(s.value, "");
  EXPECT_EQ(s.over_limit, 4u);
  // Idempotent: the output of any trim is kept as it is.
  EXPECT_EQ(SanitizeTracestate(long1 + "," + small).value, long1 + "," + small);
}

// ---------------------------------------------------------------------------
// baggage: drops counted, a byte bound

TEST(BaggageBudget, FormatDropsWholeMembersOnly) {
  std::vector<BaggageMember> members;
  for (int i = 0; i < 10; ++i) {
    members.push_back({absl::StrCat("k", i), std::string(20, 'v'), ""});
  }
  // Each member is 23 bytes ("kN=" + 20); 3 of them and 2 commas = 71.
  BaggageDrops drops;
  const std::string out = FormatBaggage(members, 71, &drops);
  EXPECT_EQ(out.size(), 71u);
  EXPECT_EQ(drops.over_limit, 7u);
  EXPECT_EQ(ParseBaggage(out).size(), 3u);
  EXPECT_EQ(FormatBaggage(members, 70).size(), 47u);  // Never a partial one.
  EXPECT_EQ(FormatBaggage(members, 0), "");
}

TEST(BaggageBudget, ParseCountsInvalidMembers) {
  BaggageDrops drops;
  auto members = ParseBaggage("ok=1,a=caf\xc3\xa9,b=1\tc,=x,d", &drops);
  ASSERT_EQ(members.size(), 1u);
  EXPECT_EQ(drops.invalid, 4u);
}

// ---------------------------------------------------------------------------
// EnforceOutboundHeaders

size_t PropagationBytes(const Metadata& md) {
  size_t n = 0;
  for (const auto& [k, v] : md) {
    if (k == "traceparent" || k == "tracestate" || k == "baggage") {
      n += internal::HeaderEntrySize(k, v);
    }
  }
  return n;
}

bool AllLegal(const Metadata& md) {
  for (const auto& [k, v] : md) {
    if (!IsLegalGrpcHeaderKey(k)) return false;
    if (!IsBinaryHeaderKey(k) && !IsLegalGrpcHeaderValue(v)) return false;
  }
  return true;
}

std::string BaggageOf(size_t bytes) {
  std::string out;
  for (int i = 0; out.size() + 50 <= bytes; ++i) {
    absl::StrAppend(&out, out.empty() ? "" : ",", "k", i, "=",
                    std::string(40, 'v'));
  }
  return out;
}

TEST(EnforceOutboundHeaders, LeavesALegalCallWithinBudgetUntouched) {
  const Metadata md = {{"traceparent", kTraceparent},
                       {"tracestate", "a=1"},
                       {"baggage", "tenant=acme"},
                       {"x-app", "1"},
                       {"blob-bin", std::string("\0\xff", 2)}};
  Metadata out = md;
  internal::EnforceOutboundHeaders(out, kDefaultPropagationHeaderBudget);
  EXPECT_EQ(out, md);
}

TEST(EnforceOutboundHeaders, RemovesWhatGrpcRefusesKeepsValidMembers) {
  const uint64_t other_before =
      DroppedHeaderCount(DroppedHeader::kOther, DropReason::kInvalid);
  Metadata md = {{"traceparent", kTraceparent},
                 {"tracestate", "ok=1,a=1\tb"},
                 {"baggage", "tenant=acme,x=caf\xc3\xa9"},
                 {"x-app", "bad\x01value"},
                 {"X-Upper", "1"},
                 {"blob-bin", std::string("\0\xff", 2)}};
  internal::EnforceOutboundHeaders(md, kDefaultPropagationHeaderBudget);
  EXPECT_TRUE(AllLegal(md));
  const Metadata want = {{"traceparent", kTraceparent},
                         {"tracestate", "ok=1"},
                         {"baggage", "tenant=acme"},
                         {"blob-bin", std::string("\0\xff", 2)}};
  EXPECT_EQ(md, want);
  EXPECT_EQ(DroppedHeaderCount(DroppedHeader::kOther, DropReason::kInvalid) -
                other_before,
            2u);
}

TEST(EnforceOutboundHeaders, JoinsRepeatedListsAndTrimsToTheBudget) {
  const uint64_t budget_before =
      DroppedHeaderCount(DroppedHeader::kBaggage, DropReason::kBudget);
  Metadata md = {{"traceparent", kTraceparent},
                 {"tracestate", "a=1"},
                 {"tracestate", "b=2"},
                 {"baggage", BaggageOf(8000)},
                 {"baggage", "criticality=critical"},
                 {"x-app", std::string(3000, 'a')}};
  internal::EnforceOutboundHeaders(md, kDefaultPropagationHeaderBudget);
  EXPECT_TRUE(AllLegal(md));
  EXPECT_LE(PropagationBytes(md), kDefaultPropagationHeaderBudget);
  EXPECT_GT(PropagationBytes(md), kDefaultPropagationHeaderBudget - 100);
  EXPECT_EQ(md.count("tracestate"), 1u);
  EXPECT_EQ(md.find("tracestate")->second, "a=1,b=2");
  ASSERT_EQ(md.count("baggage"), 1u);
  // The criticality first (the next hop's shedder reads it; it was last,
  // and the budget dropped it), then the first members, whole.
  const std::string& baggage = md.find("baggage")->second;
  EXPECT_EQ(baggage.rfind("criticality=critical,k0=", 0), 0u) << baggage;
  for (const BaggageMember& m : ParseBaggage(baggage)) {
    if (m.key == "criticality") continue;
    EXPECT_EQ(m.value, std::string(40, 'v')) << m.key;
  }
  EXPECT_EQ(md.count("x-app"), 1u);  // The application's own: not ours.
  EXPECT_GT(DroppedHeaderCount(DroppedHeader::kBaggage, DropReason::kBudget),
            budget_before);
}

TEST(EnforceOutboundHeaders, TracestateFirstThenBaggageAtAnyBudget) {
  const std::string tracestate = "a=" + std::string(200, 'x') + ",b=1";
  for (size_t budget = kMinPropagationHeaderBudget; budget <= 9000;
       budget += 37) {
    Metadata md = {{"traceparent", kTraceparent},
                   {"tracestate", tracestate},
                   {"baggage", BaggageOf(8150)}};
    internal::EnforceOutboundHeaders(md, budget);
    SCOPED_TRACE(budget);
    EXPECT_TRUE(AllLegal(md));
    EXPECT_LE(PropagationBytes(md), budget);
    ASSERT_EQ(md.count("traceparent"), 1u);
    if (budget >= 98 + 42 + tracestate.size()) {
      EXPECT_EQ(md.find("tracestate")->second, tracestate);
    } else if (budget >= 98 + 42 + 3) {
      EXPECT_EQ(md.find("tracestate")->second, "b=1");  // Long one first.
    }
    if (auto it = md.find("baggage"); it != md.end()) {
      EXPECT_FALSE(ParseBaggage(it->second).empty());
    }
  }
}

TEST(ClientInterceptorOptions, ValidatesTheBudgetNamingTheField) {
  EXPECT_TRUE(ValidateClientInterceptorOptions({}).ok());
  for (size_t bad : {size_t{0}, kMinPropagationHeaderBudget - 1,
                     kMaxPropagationHeaderBudget + 1}) {
    absl::Status s = ValidateClientInterceptorOptions(
        {.propagation_header_budget = bad});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("propagation_header_budget"), std::string::npos);
  }
  EXPECT_FALSE(MakeClientInterceptorFactoryWithOptions(
                   {.propagation_header_budget = 1})
                   .ok());
}

// ---------------------------------------------------------------------------
// grpc-timeout compensation

TEST(GrpcTimeout, EncodingTable) {
  // (ms left -> ms the peer decodes), from gRPC 1.51's Timeout::FromMillis.
  const std::vector<std::pair<int64_t, int64_t>> table = {
      {-5, 1},          {0, 1},           {1, 1},
      {999, 999},       {1000, 1000},     {1001, 1010},
      {1009, 1010},     {1010, 1010},     {9991, 10000},
      {9999, 10000},    {10000, 10000},   {10001, 10100},
      {50001, 50100},   {59950, 60000},   {99901, 100000},
      {100001, 101000}, {119001, 120000}, {999001, 1000000},
      {1000001, 1010000},
      {3599999, 3600000},  // 360 x 10 s: a whole hour, written "1H".
      {3600001, 3610000},
      {100000001, 100200000},  // 1,667 min, in 10 min units.
      {int64_t{30000} * 3600 * 1000, int64_t{27000} * 3600 * 1000},  // Cap.
  };
  for (const auto& [in, out] : table) {
    EXPECT_EQ(internal::GrpcEncodedTimeoutMs(in), out) << in;
  }
}

TEST(GrpcTimeout, EncodingNeverDecreasesAndRoundsUp) {
  int64_t prev = 0;
  for (int64_t ms = 0; ms <= 2'000'000; ++ms) {
    const int64_t e = internal::GrpcEncodedTimeoutMs(ms);
    ASSERT_GE(e, prev) << ms;
    ASSERT_GE(e, ms) << ms;
    prev = e;
  }
}

// LargestEncodedAtMost against its definition, a binary search over the
// non-decreasing encoding: exhaustive to 2,000 s by the ms, sampled beyond
// up to past gRPC's 27,000 h cap.
int64_t LargestEncodedBySearch(int64_t target_ms) {
  int64_t lo = 0, hi = target_ms;  // E(lo) <= target; answer in [lo, hi].
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (internal::GrpcEncodedTimeoutMs(mid) <= target_ms) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

TEST(GrpcTimeout, LargestEncodedAtMostIsTheSearchsAnswer) {
  const int64_t exhaustive = testing::PlainOrSanitized<int64_t>(2'000'000, 300'000);
  for (int64_t ms = 0; ms <= exhaustive; ++ms) {
    ASSERT_EQ(internal::LargestEncodedAtMost(ms), LargestEncodedBySearch(ms))
        << ms;
  }
  for (int64_t ms = exhaustive; ms < int64_t{40000} * 3600 * 1000;
       ms = ms * 1.013 + 7) {
    for (int64_t d = -2; d <= 2; ++d) {  // Around each sample too.
      ASSERT_EQ(internal::LargestEncodedAtMost(ms + d),
                LargestEncodedBySearch(ms + d))
          << ms + d;
    }
  }
  // Each unit's boundaries, where the table changes units.
  for (int64_t unit : {int64_t{1000}, int64_t{60'000}, int64_t{3'600'000}}) {
    for (int64_t k : {999, 1000, 1001, 9999, 10000, 10001, 99999, 100000,
                      100001}) {
      for (int64_t d = -3; d <= 3; ++d) {
        const int64_t ms = k * unit + d;
        ASSERT_EQ(internal::LargestEncodedAtMost(ms),
                  LargestEncodedBySearch(ms))
            << ms;
      }
    }
  }
}

// The most the peer may decode for an outbound timeout `t`: gRPC measures up
// to kGrpcTimeoutSlackMs more than t, encodes it (rounding up), and its HPACK
// encoder may send instead an earlier timeout T of the same connection with
// -3 < 100 * (encoded / T - 1) <= 0, i.e. T < encoded / 0.97. Returned as
// the bound T < WorstDecodedBound (exclusive), in ms.
double WorstDecodedBound(absl::Duration t) {
  const int64_t encoded = internal::GrpcEncodedTimeoutMs(
      absl::ToInt64Milliseconds(t) + internal::kGrpcTimeoutSlackMs);
  return encoded / 0.97;
}

TEST(GrpcTimeout, OutboundTimeoutNeverEncodesLaterThanWhatIsLeft) {
  // Exhaustive to 200 s by the ms (plus a fraction of a ms), sampled beyond.
  for (int64_t ms = 0; ms <= 200'000; ++ms) {
    const absl::Duration left = absl::Milliseconds(ms) + absl::Microseconds(700);
    const absl::Duration t = internal::OutboundGrpcTimeout(left);
    ASSERT_GE(t, absl::ZeroDuration());
    if (t > absl::ZeroDuration()) {
      ASSERT_LE(WorstDecodedBound(t), static_cast<double>(ms)) << ms;
      // And it gives away at most 3%, one unit of the table and the slack.
      const int64_t unit = ms < 1000 ? 1 : ms < 10000 ? 10 : ms < 100000 ? 100 : 1000;
      ASSERT_GE(absl::ToInt64Milliseconds(t),
                ms * 97 / 100 - unit - internal::kGrpcTimeoutSlackMs - 1)
          << ms;
    }
  }
  for (int64_t ms = 200'000; ms < int64_t{40000} * 3600 * 1000;
       ms = ms * 1.37 + 11) {
    const absl::Duration t =
        internal::OutboundGrpcTimeout(absl::Milliseconds(ms));
    ASSERT_LE(WorstDecodedBound(t), static_cast<double>(ms)) << ms;
    ASSERT_GT(t, absl::Milliseconds(ms) * 0.955) << ms;  // 3% + a unit.
  }
  EXPECT_EQ(internal::OutboundGrpcTimeout(absl::Milliseconds(2)),
            absl::ZeroDuration());
  EXPECT_EQ(internal::OutboundGrpcTimeout(-absl::Seconds(1)),
            absl::ZeroDuration());
  EXPECT_EQ(internal::OutboundGrpcTimeout(absl::InfiniteDuration()),
            absl::InfiniteDuration());
  // The figures of the contract: 1 s -> 968 ms, 50 s -> 48.498 s.
  EXPECT_EQ(internal::OutboundGrpcTimeout(absl::Seconds(1)),
            absl::Milliseconds(968));
  EXPECT_EQ(internal::OutboundGrpcTimeout(absl::Seconds(50)),
            absl::Milliseconds(48498));
}

}  // namespace
}  // namespace reqctx
