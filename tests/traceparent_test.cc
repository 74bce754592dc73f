// W3C traceparent parsing/formatting and TraceContext in a Context.
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <string_view>
#include <type_traits>

#include "context/core.h"
#include "gtest/gtest.h"
#include "w3c/trace_propagation.h"
#include "w3c/trace_context.h"

namespace reqctx {
namespace {

constexpr std::string_view kValid =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(ParseTraceparent, AcceptsValidHeader) {
  std::optional<TraceContext> tc = ParseTraceparent(kValid);
  ASSERT_TRUE(tc.has_value());
  EXPECT_EQ(tc->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(tc->span_id, "00f067aa0ba902b7");
  EXPECT_TRUE(tc->sampled);
}

TEST(ParseTraceparent, ReadsSampledFlagFromBitZero) {
  auto unsampled = ParseTraceparent(
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_FALSE(unsampled->sampled);
  // Unknown flag bits are allowed; only bit 0 means "sampled".
  auto other_bits = ParseTraceparent(
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe");
  ASSERT_TRUE(other_bits.has_value());
  EXPECT_FALSE(other_bits->sampled);
  auto both = ParseTraceparent(
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03");
  ASSERT_TRUE(both.has_value());
  EXPECT_TRUE(both->sampled);
}

// Each malformed shape, derived from the valid header by one change.
TEST(ParseTraceparent, RejectsEveryMalformedShape) {
  const std::string valid(kValid);
  auto with = [&valid](size_t pos, char c) {
    std::string s = valid;
    s[pos] = c;
    return s;
  };
  const std::string cases[] = {
      "",
      "00",
      valid.substr(0, 54),                                 // one short
      valid + "0",                                         // one long
      valid + "-",                                         // trailing field
      " " + valid.substr(1),                               // leading space
      valid.substr(0, 54) + " ",                           // trailing space
      "ff" + valid.substr(2),                              // version ff
      "ff" + valid.substr(2) + "-x",
      "0g" + valid.substr(2),                              // non-hex version
      "0A" + valid.substr(2),                              // uppercase version
      "01" + valid.substr(2, 52),                          // later, too short
      "01" + valid.substr(2) + "x",                        // no '-' after flags
      "cc" + valid.substr(2) + "0-extra",
      "01" + valid.substr(2, 30) + "A" + valid.substr(33), // 00 rules apply
      "01-00000000000000000000000000000000-00f067aa0ba902b7-01",
      with(2, '_'),                                        // separators
      with(35, '_'),
      with(52, '_'),
      with(3, 'A'),                                        // uppercase
      with(40, 'F'),
      with(53, 'A'),
      with(10, 'g'),                                       // non-hex
      with(45, 'z'),
      with(54, 'x'),
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  // zero trace
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  // zero span
      "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  // shifted
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
      "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
      "garbage-garbage-garbage-garbage-garbage-garbage-garbage",
      std::string(55, '-'),
      std::string("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\0", 55),
  };
  for (const std::string& c : cases) {
    EXPECT_FALSE(ParseTraceparent(c).has_value()) << "accepted: \"" << c << "\"";
  }
}

// W3C Trace Context level 1, "Versioning of traceparent": a version above
// 00 (and not ff) is parsed by the version-00 rules when it is at least as
// long, ignoring fields after the flags (each after a '-').
TEST(ParseTraceparent, LaterVersionsAreReadByVersion00Rules) {
  const std::string ids = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
  const std::string accepted[] = {
      "01-" + ids + "-01",
      "cc-" + ids + "-01-what-the-future-holds",
      "fe-" + ids + "-01-",
      "9a-" + ids + "-01-" + std::string(3000, 'z'),
  };
  for (const std::string& h : accepted) {
    std::optional<TraceContext> tc = ParseTraceparent(h);
    ASSERT_TRUE(tc.has_value()) << h;
    EXPECT_EQ(tc->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_EQ(tc->span_id, "00f067aa0ba902b7");
    EXPECT_TRUE(tc->sampled);
    // Passed on as the version this library writes.
    EXPECT_EQ(FormatTraceparent(*tc), "00-" + ids + "-01");
  }
  std::optional<TraceContext> unsampled = ParseTraceparent("42-" + ids + "-02");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_FALSE(unsampled->sampled);
  // Version 00 stays exact: no extra fields.
  EXPECT_FALSE(ParseTraceparent("00-" + ids + "-01-extra").has_value());
}

TEST(ParseTraceparent, RejectsOversizedInputCheaply) {
  std::string huge(1 << 20, 'a');
  EXPECT_FALSE(ParseTraceparent(huge).has_value());
  EXPECT_FALSE(ParseTraceparent(std::string(kValid) + std::string(4096, '0'))
                   .has_value());
}

TEST(FormatTraceparent, RoundTrips) {
  for (bool sampled : {true, false}) {
    TraceContext tc{"0123456789abcdef0123456789abcdef", "fedcba9876543210",
                    sampled};
    std::string header = FormatTraceparent(tc);
    EXPECT_EQ(header.size(), 55u);
    std::optional<TraceContext> back = ParseTraceparent(header);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->trace_id, tc.trace_id);
    EXPECT_EQ(back->span_id, tc.span_id);
    EXPECT_EQ(back->sampled, sampled);
  }
  EXPECT_EQ(FormatTraceparent(*ParseTraceparent(kValid)), kValid);
  // W3C: unknown flag bits MUST be set to zero when passed on.
  EXPECT_EQ(FormatTraceparent(*ParseTraceparent(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  EXPECT_EQ(FormatTraceparent(*ParseTraceparent(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe")),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
}

TEST(TraceContextInContext, StoredAndInherited) {
  EXPECT_FALSE(GetTraceContext(Background()).has_value());
  Context ctx = WithTraceContext(
      Background(), TraceContext{"0123456789abcdef0123456789abcdef",
                                 "fedcba9876543210", false});
  auto [child, cancel] = WithCancel(ctx);
  std::optional<TraceContext> tc = GetTraceContext(child);
  ASSERT_TRUE(tc.has_value());
  EXPECT_EQ(tc->trace_id, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(tc->span_id, "fedcba9876543210");
  EXPECT_FALSE(tc->sampled);
}

TEST(ContinueTrace, KeepsTraceIdWithFreshSpan) {
  internal::IncomingTrace in =
      internal::ContinueTrace({kValid}, {"vendor=value"});
  EXPECT_EQ(in.trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_NE(in.trace.span_id, "00f067aa0ba902b7");
  EXPECT_TRUE(ParseTraceparent(FormatTraceparent(in.trace)).has_value());
  ASSERT_TRUE(in.tracestate.has_value());
  EXPECT_EQ(*in.tracestate, "vendor=value");
}

TEST(ContinueTrace, StartsFreshTraceOnBadInput) {
  const std::vector<std::vector<std::string_view>> bad = {
      {}, {"junk"}, {kValid, kValid}, {std::string_view("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01")}};
  for (const auto& headers : bad) {
    internal::IncomingTrace in = internal::ContinueTrace(headers, {"a=b"});
    EXPECT_NE(in.trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_TRUE(ParseTraceparent(FormatTraceparent(in.trace)).has_value());
    EXPECT_FALSE(in.tracestate.has_value());  // Meaningless without parent.
  }
}

TEST(ContinueTrace, BoundsTracestate) {
  // 512 bytes of valid members are kept; past 512, W3C's trimming (members
  // over 128 characters first, then from the right).
  const std::string long_member = "a=" + std::string(254, 'x');  // 256.
  const std::string at_limit = long_member + "," + "b=" + std::string(253, 'y');
  ASSERT_EQ(at_limit.size(), internal::kMaxTracestateSize);
  auto kept = internal::ContinueTrace({kValid}, {at_limit}).tracestate;
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(*kept, at_limit);
  auto trimmed = internal::ContinueTrace({kValid}, {at_limit + ",c=1"}).tracestate;
  ASSERT_TRUE(trimmed.has_value());
  EXPECT_EQ(*trimmed, "a=" + std::string(254, 'x') + ",c=1");
  // Junk (no '=') is not a member.
  EXPECT_FALSE(internal::ContinueTrace({kValid}, {std::string(100, 'x')})
                   .tracestate);
  // Repeated headers are one list, bounded as a whole.
  auto joined = internal::ContinueTrace({kValid}, {"a=1", "b=2"}).tracestate;
  ASSERT_TRUE(joined.has_value());
  EXPECT_EQ(*joined, "a=1,b=2");
  const std::string k = "k=" + std::string(256, 'y');
  const std::string m = "m=" + std::string(256, 'y');
  auto halves = internal::ContinueTrace({kValid}, {k, "z=1", k, m}).tracestate;
  ASSERT_TRUE(halves.has_value());
  // The repeated k is invalid; then over 512, the long m goes (from the
  // right), which is enough.
  EXPECT_EQ(*halves, k + ",z=1");
}

// The ids are held inline: a TraceContext is a trivially copyable value
// (no allocation to parse, copy or store one), reads as a string, and keeps
// what it was given, cut to 32 / 16 characters.
TEST(TraceContextIds, InlineValuesThatReadAsStrings) {
  static_assert(std::is_trivially_copyable_v<TraceContext>);
  static_assert(std::is_trivially_destructible_v<TraceContext>);
  const TraceContext tc{"4bf92f3577b34da6a3ce929d0e0e4736",
                        std::string("00f067aa0ba902b7"), false};
  const std::string_view trace = tc.trace_id;
  EXPECT_EQ(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(tc.span_id, std::string("00f067aa0ba902b7"));
  EXPECT_EQ(std::string("00f067aa0ba902b7"), tc.span_id);
  EXPECT_EQ(tc.span_id.str(), "00f067aa0ba902b7");
  EXPECT_EQ(std::string(tc.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(tc.trace_id, TraceId("4bf92f3577b34da6a3ce929d0e0e4736"));
  EXPECT_NE(tc.trace_id, TraceId("4bf92f3577b34da6a3ce929d0e0e4737"));
  EXPECT_LT(SpanId("0a"), SpanId("0b"));
  EXPECT_TRUE(TraceId().empty());
  EXPECT_EQ(SpanId("abc").size(), 3u);  // Not validated, as before.
  EXPECT_EQ(SpanId(std::string(40, 'b')), std::string(16, 'b'));
  EXPECT_NE(SpanId(std::string(16, 'b')), std::string(40, 'b'));  // No cut.
  EXPECT_EQ(TraceId(std::string(40, 'a')).size(), 32u);
  std::string s;
  s = tc.span_id;  // std::string takes it as a string_view.
  EXPECT_EQ(s, "00f067aa0ba902b7");
  EXPECT_EQ(FormatTraceparent(tc),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
}

TEST(NewIds, AreValidAndDistinct) {
  const TraceId a = internal::NewTraceId(), b = internal::NewTraceId();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(internal::NewSpanId().size(), 16u);
  EXPECT_NE(a, b);
  EXPECT_NE(internal::NewSpanId(), internal::NewSpanId());
  EXPECT_TRUE(ParseTraceparent(
                  FormatTraceparent({a, internal::NewSpanId(), true}))
                  .has_value());
}

// After fork() the child must not repeat the parent's ids: the per-thread
// generator (used in the parent before the fork, so its state is copied into
// the child) is reseeded in the child.
TEST(NewIds, ForkedChildDrawsDifferentIds) {
  ASSERT_FALSE(internal::NewTraceId().empty());  // Generator state exists.
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    const std::string ids =
        internal::NewTraceId().str() + internal::NewSpanId().str();
    _exit(write(fds[1], ids.data(), ids.size()) ==
                  static_cast<ssize_t>(ids.size())
              ? 0
              : 1);
  }
  close(fds[1]);
  const std::string parent =
      internal::NewTraceId().str() + internal::NewSpanId().str();
  std::string child;
  char buf[64];
  pollfd p{fds[0], POLLIN, 0};
  while (child.size() < 48 && poll(&p, 1, 20000) == 1) {
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    child.append(buf, static_cast<size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(child.size(), 48u);
  EXPECT_NE(child.substr(0, 32), parent.substr(0, 32)) << "same trace id";
  EXPECT_NE(child.substr(32), parent.substr(32)) << "same span id";
}

}  // namespace
}  // namespace reqctx
