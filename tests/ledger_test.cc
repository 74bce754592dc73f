// //ledger: the recorder, the readable line, the codec into google.rpc.Status
// (round trip, the size cap and summarising, the merge rule) and the
// decoder's bounds against hostile details; the cause values.
#include "ledger/ledger.h"

#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "gtest/gtest.h"
#include "context/core.h"
#include "ledger/causes.h"
#include "reqctx/v1/ledger.pb.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using absl::Milliseconds;
using absl::Microseconds;

const absl::Time kT0 = absl::FromUnixSeconds(1000);

// frontend -> middle -> backend (never called): the issue's example.
Ledger ExampleLedger() {
  LedgerHop middle;
  middle.method = "/echo.v1.Echo/Echo";
  middle.host = "middle";
  middle.budget = Milliseconds(199);
  middle.work = Microseconds(150200);
  middle.code = 4;
  middle.cause = CauseKind::kCallerDeadline;
  LedgerOutbound never;
  never.method = "/echo.v1.Echo/Echo";
  never.budget = absl::ZeroDuration();
  never.code = 4;
  never.sent = false;
  middle.outbound.push_back(never);

  Ledger l;
  l.root.method = "/echo.v1.Echo/Echo";
  l.root.host = "frontend";
  l.root.budget = Milliseconds(250);
  l.root.queued = Microseconds(400);
  l.root.work = Microseconds(50100);
  l.root.outbound_wait = Milliseconds(199);
  l.root.code = 4;
  l.root.cause = CauseKind::kCallerDeadline;
  LedgerOutbound call;
  call.method = "/echo.v1.Echo/Echo";
  call.budget = Milliseconds(199);
  // The middle hop's own 150.2 ms and a transit under 1 ms (not shown).
  call.took = Microseconds(150600);
  call.code = 4;
  call.ledger.push_back(middle);
  l.root.outbound.push_back(call);
  return l;
}

// A chain of `n` hops, each calling the next, the last one failing.
Ledger Chain(int n) {
  LedgerHop hop;
  for (int i = n - 1; i >= 0; --i) {
    LedgerHop h;
    h.method = "/reqctx.test.Chain/Hop";
    h.host = "hop-" + std::to_string(i);
    h.budget = Milliseconds(1000 - 10 * i);
    h.queued = Microseconds(100 + i);
    h.work = Microseconds(5000 + i);
    h.code = 4;
    h.cause = CauseKind::kCallerDeadline;
    h.deadline_set_by = "hop-0";
    if (i < n - 1) {
      LedgerOutbound o;
      o.method = "/reqctx.test.Chain/Hop";
      o.budget = Milliseconds(990 - 10 * i);
      o.took = Milliseconds(990 - 10 * i);
      o.code = 4;
      o.ledger.push_back(std::move(hop));
      h.outbound.push_back(std::move(o));
    }
    hop = std::move(h);
  }
  Ledger l;
  l.root = std::move(hop);
  return l;
}

int DepthOf(const LedgerHop& h) {
  int d = 1;
  for (const LedgerOutbound& o : h.outbound) {
    if (!o.ledger.empty()) d = std::max(d, 1 + DepthOf(o.ledger.front()));
  }
  return d;
}

TEST(CausesTest, MarkKeepsTheStatusAndAddsTheKind) {
  const absl::Status marked = MarkCause(absl::NotFoundError("no row"),
                                        CauseKind::kGroupSibling, "task #3");
  EXPECT_EQ(marked.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(marked.message(), "no row");
  EXPECT_EQ(CauseOf(marked), CauseKind::kGroupSibling);
  EXPECT_EQ(CauseHop(marked), "task #3");
  EXPECT_EQ(CauseDescription(marked),
            "canceled: a sibling in the group failed (task #3): no row");
  EXPECT_TRUE(MarkCause(absl::OkStatus(), CauseKind::kShed).ok());
  EXPECT_EQ(CauseOf(MarkCause(absl::InternalError("x"), CauseKind::kNone)),
            CauseKind::kNone);
}

TEST(CausesTest, PrebuiltStatusesEqualMakeCause) {
  for (int i = 0; i < kCauseKinds; ++i) {
    const auto kind = static_cast<CauseKind>(i);
    EXPECT_EQ(CauseStatus(kind), MakeCause(kind)) << CauseName(kind);
    EXPECT_EQ(CauseOf(CauseStatus(kind)), kind);
    // The prebuilt message is what the outbound status says.
    EXPECT_EQ(CauseDescription(CauseStatus(kind)), CauseMessage(kind));
  }
  EXPECT_EQ(&CauseStatus(CauseKind::kShed), &CauseStatus(CauseKind::kShed));
  EXPECT_EQ(CauseDescription(MakeCause(CauseKind::kCallerDeadline, "frontend")),
            "deadline exceeded: caller's deadline (set by frontend)");
  EXPECT_EQ(CauseDescription(absl::CancelledError("context canceled")), "");
  // A marked status whose message is the phrase says it once.
  EXPECT_EQ(CauseDescription(MarkCause(absl::UnavailableError(
                                           "server shutting down"),
                                       CauseKind::kServerShutdown)),
            "canceled: server shutting down");
}

TEST(CausesTest, CodeNamesAreTheCanonicalOnes) {
  EXPECT_EQ(CodeName(0), "OK");
  EXPECT_EQ(CodeName(4), "DEADLINE_EXCEEDED");
  EXPECT_EQ(CodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(CodeName(-1), "UNKNOWN");
  EXPECT_EQ(CodeName(17), "UNKNOWN");
  for (int c = 0; c < kStatusCodes; ++c) {
    EXPECT_EQ(CodeName(c),
              absl::StatusCodeToString(static_cast<absl::StatusCode>(c)));
  }
}

TEST(LedgerLineTest, TheIssuesExample) {
  EXPECT_EQ(LedgerLine(ExampleLedger()),
            "deadline 250 ms: frontend 0.4 ms queued, 50.1 ms work -> middle "
            "(199 ms left) 150.2 ms work, deadline ran out here -> "
            "/echo.v1.Echo/Echo never called");
}

TEST(LedgerLineTest, NoLedgerShedAndCause) {
  Ledger l;
  l.root.method = "/a.B/C";
  l.root.work = Microseconds(1500);
  l.root.code = 14;
  LedgerOutbound o;
  o.method = "/x.Y/Z";
  o.took = Milliseconds(12);
  o.code = 14;
  l.root.outbound.push_back(o);
  EXPECT_EQ(LedgerLine(l),
            "no deadline: /a.B/C 1.5 ms work -> /x.Y/Z 12.0 ms, UNAVAILABLE "
            "(no ledger)");
  Ledger shed;
  shed.root.host = "backend";
  shed.root.budget = Milliseconds(80);
  shed.root.policy.shed = true;
  shed.root.code = 8;
  shed.root.cause = CauseKind::kShed;
  EXPECT_EQ(LedgerLine(shed),
            "deadline 80.0 ms: backend shed, ended here: shed by the load "
            "shedder");
}

TEST(LedgerLineTest, AHopsOwnDeadlineSaysWhichOne) {
  Ledger l;
  l.root.host = "middle";
  l.root.budget = Milliseconds(100);
  l.root.work = Milliseconds(90);
  l.root.code = 4;
  l.root.cause = CauseKind::kReplyMargin;
  const std::string line = LedgerLine(l);
  EXPECT_NE(line.find(", deadline ran out here ("), std::string::npos) << line;
  EXPECT_EQ(line.find("ended here"), std::string::npos) << line;
  l.root.cause = CauseKind::kCallerDeadline;
  EXPECT_EQ(LedgerLine(l), "deadline 100 ms: middle 90.0 ms work, deadline "
                           "ran out here");
}

// The network between two hops: a nested ledger's transit (the caller's
// time less the callee's own), shown from 1 ms on; a deadline that ran out
// with no ledger back is the link's, named by its two ends.
TEST(LedgerLineTest, NetworkTimeBetweenHops) {
  LedgerHop middle;
  middle.host = "middle";
  middle.budget = Milliseconds(150);
  middle.queued = Milliseconds(10);
  middle.work = Milliseconds(80);
  middle.outbound_wait = Milliseconds(10);
  middle.code = 4;
  middle.cause = CauseKind::kReplyMargin;
  LedgerOutbound call;
  call.method = "/echo.v1.Echo/Echo";
  call.budget = Milliseconds(150);
  call.took = Milliseconds(200);
  call.code = 4;
  call.ledger.push_back(middle);
  EXPECT_EQ(LedgerNetworkTime(call), Milliseconds(100));
  Ledger l;
  l.root.host = "frontend";
  l.root.budget = Milliseconds(250);
  l.root.work = Milliseconds(30);
  l.root.outbound_wait = Milliseconds(200);
  l.root.code = 4;
  l.root.outbound.push_back(call);
  EXPECT_EQ(LedgerLine(l),
            "deadline 250 ms: frontend 30.0 ms work -> network 100.0 ms -> "
            "middle (150 ms left) 10.0 ms queued, 80.0 ms work, deadline ran "
            "out here (reply margin)");
  // A callee that recorded more than the caller waited (clocks tick
  // apart): no negative transit.
  l.root.outbound[0].took = Milliseconds(50);
  EXPECT_EQ(LedgerNetworkTime(l.root.outbound[0]), absl::ZeroDuration());
  EXPECT_EQ(LedgerLine(l).find("network"), std::string::npos);

  // Ran out in transit: sent, DEADLINE_EXCEEDED, no ledger back.
  LedgerOutbound lost;
  lost.method = "/echo.v1.Echo/Echo";
  lost.budget = Milliseconds(37);
  lost.took = Milliseconds(37);
  lost.code = 4;
  lost.peer = "ipv4:10.231.1.2:7201";
  EXPECT_EQ(LedgerNetworkTime(lost), std::nullopt);
  l.root.work = Microseconds(200);
  l.root.outbound = {lost};
  EXPECT_EQ(LedgerLine(l),
            "deadline 250 ms: frontend 0.2 ms work -> network 37.0 ms to "
            "ipv4:10.231.1.2:7201 (/echo.v1.Echo/Echo), DEADLINE_EXCEEDED: "
            "deadline ran out in transit, no ledger came back");
  // The peer crosses the wire.
  absl::StatusOr<Ledger> out =
      DecodeLedgerDetails(EncodeLedgerStatus(4, "", l));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->root.outbound.at(0).peer, "ipv4:10.231.1.2:7201");
  EXPECT_EQ(LedgerLine(*out), LedgerLine(l));
  // Without a peer, the method names the callee.
  l.root.outbound[0].peer.clear();
  EXPECT_NE(LedgerLine(l).find("network 37.0 ms to /echo.v1.Echo/Echo, "),
            std::string::npos);
}

// The caller's deadline ran out at the middle: the line names the hop above
// that set it (its policy capped it), none when it is the top caller's.
TEST(LedgerLineTest, TheCallersDeadlineNamesTheHopThatSetIt) {
  Ledger l = ExampleLedger();
  EXPECT_EQ(LedgerLine(l).find("set by"), std::string::npos);
  l.root.policy.deadline_change = LedgerPolicy::DeadlineChange::kCapped;
  l.root.policy.policy_budget = Milliseconds(250);
  EXPECT_NE(LedgerLine(l).find("150.2 ms work, deadline ran out here (set by "
                               "frontend) -> "),
            std::string::npos)
      << LedgerLine(l);
  // A hop's own deadline_set_by wins.
  l.root.outbound[0].ledger[0].deadline_set_by = "edge";
  EXPECT_NE(LedgerLine(l).find("(set by edge)"), std::string::npos);
}

TEST(LedgerRecorderTest, KeepsThePeerOnlyForAFailedCallWithoutALedger) {
  LedgerRecorder rec("/a.B/C", "frontend", kT0, Milliseconds(250));
  rec.HandlerStarted(kT0);
  auto ok = rec.OutboundStarted("/x.Y/A", Milliseconds(200), kT0);
  auto lost = rec.OutboundStarted("/x.Y/B", Milliseconds(200), kT0);
  auto back = rec.OutboundStarted("/x.Y/C", Milliseconds(200), kT0);
  rec.OutboundEnded(ok, kT0 + Milliseconds(1), 0, true, std::nullopt, "ipv4:a");
  rec.OutboundEnded(lost, kT0 + Milliseconds(2), 4, true, std::nullopt,
                    "ipv4:b");
  LedgerHop child;
  child.host = "c";
  rec.OutboundEnded(back, kT0 + Milliseconds(3), 4, true, child, "ipv4:c");
  const Ledger l = rec.Snapshot();
  ASSERT_EQ(l.root.outbound.size(), 3u);
  EXPECT_EQ(l.root.outbound[0].peer, "");
  EXPECT_EQ(l.root.outbound[1].peer, "ipv4:b");
  EXPECT_EQ(l.root.outbound[2].peer, "");
}

TEST(LedgerRecorderTest, SplitsWorkFromOverlappingOutboundCalls) {
  LedgerRecorder rec("/a.B/C", "frontend", kT0, Milliseconds(250));
  rec.SetQueued(Microseconds(400));
  rec.HandlerStarted(kT0 + Milliseconds(1));
  // Two calls overlapping from +11 to +41 ms; in flight 10..41 in total.
  auto a = rec.OutboundStarted("/x.Y/A", Milliseconds(200), kT0 + Milliseconds(11));
  auto b = rec.OutboundStarted("/x.Y/B", Milliseconds(190), kT0 + Milliseconds(21));
  rec.OutboundEnded(a, kT0 + Milliseconds(31), 0, true);
  LedgerHop child;
  child.host = "middle";
  child.code = 4;
  rec.OutboundEnded(b, kT0 + Milliseconds(41), 4, true, child);
  rec.HandlerEnded(kT0 + Milliseconds(51));
  rec.Ended(4, CauseKind::kCallerDeadline, "", Milliseconds(-1));
  Ledger l = rec.Snapshot();
  EXPECT_EQ(l.root.method, "/a.B/C");
  EXPECT_EQ(l.root.host, "frontend");
  EXPECT_EQ(l.root.budget, Milliseconds(250));
  EXPECT_EQ(l.root.queued, Microseconds(400));
  EXPECT_EQ(l.root.outbound_wait, Milliseconds(30));
  EXPECT_EQ(l.root.work, Milliseconds(20));
  ASSERT_EQ(l.root.outbound.size(), 2u);
  EXPECT_EQ(l.root.outbound[0].took, Milliseconds(20));
  EXPECT_EQ(l.root.outbound[0].code, 0);
  EXPECT_TRUE(l.root.outbound[0].ledger.empty());
  EXPECT_EQ(l.root.outbound[1].took, Milliseconds(20));
  ASSERT_EQ(l.root.outbound[1].ledger.size(), 1u);
  EXPECT_EQ(l.root.outbound[1].ledger[0].host, "middle");
  EXPECT_EQ(l.root.reply_margin, Milliseconds(-1));
  EXPECT_EQ(l.root.cause, CauseKind::kCallerDeadline);
}

TEST(LedgerRecorderTest, KeepsAtMostTheCapAndCountsTheRest) {
  LedgerRecorder rec("/a.B/C", "", kT0, std::nullopt);
  for (int i = 0; i < kLedgerRecordedOutbound + 5; ++i) {
    auto id = rec.OutboundStarted("/x.Y/Z", std::nullopt, kT0);
    rec.OutboundEnded(id, kT0 + Milliseconds(1), 0, true);
  }
  // An id never issued, and one ended twice: ignored.
  rec.OutboundEnded(1000, kT0, 1, true);
  rec.OutboundEnded(0, kT0 + Milliseconds(9), 1, true);
  Ledger l = rec.Snapshot();
  EXPECT_EQ(l.root.outbound.size(), size_t{kLedgerRecordedOutbound});
  EXPECT_EQ(l.root.omitted_outbound, 5u);
  EXPECT_EQ(l.root.outbound[0].code, 0);
  EXPECT_FALSE(l.root.budget.has_value());
}

// Outbound calls recorded from many threads at once (a Group's tasks): every
// call is kept or counted, and the in-flight time is never more than the
// handler's.
TEST(LedgerRecorderTest, ConcurrentOutboundCalls) {
  const int kThreads = 8;
  const int kCalls = testing::PlainOrSanitized(200, 50);
  LedgerRecorder rec("/a.B/C", "h", kT0, Milliseconds(100));
  rec.HandlerStarted(kT0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&rec, t, kCalls] {
      for (int i = 0; i < kCalls; ++i) {
        absl::Time start = kT0 + Microseconds(10 * i + t);
        auto id = rec.OutboundStarted("/x.Y/Z", std::nullopt, start);
        rec.OutboundEnded(id, start + Microseconds(5), i % 3 == 0 ? 4 : 0,
                          true);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  rec.HandlerEnded(kT0 + Milliseconds(10));
  Ledger l = rec.Snapshot();
  EXPECT_EQ(l.root.outbound.size() + l.root.omitted_outbound,
            static_cast<size_t>(kThreads * kCalls));
  EXPECT_EQ(l.root.outbound.size(), size_t{kLedgerRecordedOutbound});
  EXPECT_LE(l.root.outbound_wait, Milliseconds(10));
  EXPECT_EQ(l.root.work + l.root.outbound_wait, Milliseconds(10));
}

TEST(LedgerRecorderTest, ShouldReturnTheFailureCodes) {
  for (int code = 0; code <= 16; ++code) {
    EXPECT_EQ(LedgerRecorder::ShouldReturn(code),
              code == 1 || code == 4 || code == 8 || code == 14)
        << code;
  }
}

TEST(LedgerCodecTest, RoundTrip) {
  Ledger in = ExampleLedger();
  in.root.reply_margin = Milliseconds(-3);
  in.root.policy.min_budget = Milliseconds(5);
  in.root.policy.deadline_change = LedgerPolicy::DeadlineChange::kCapped;
  in.root.policy.policy_budget = Milliseconds(250);
  in.root.deadline_set_by = "edge";
  std::string details = EncodeLedgerStatus(4, "deadline exceeded", in);
  ASSERT_LE(details.size(), kLedgerDetailsCap);

  google::rpc::Status st;
  ASSERT_TRUE(st.ParseFromString(details));
  EXPECT_EQ(st.code(), 4);
  EXPECT_EQ(st.message(), "deadline exceeded");
  ASSERT_EQ(st.details_size(), 3);
  EXPECT_EQ(st.details(0).type_url(), kLedgerTypeUrl);
  google::rpc::ErrorInfo info;
  ASSERT_TRUE(st.details(1).UnpackTo(&info));
  EXPECT_EQ(info.domain(), "reqctx.dev");
  EXPECT_EQ(info.reason(), "CALLER_DEADLINE");
  EXPECT_EQ(info.metadata().at("hop"), "frontend");
  EXPECT_EQ(info.metadata().at("deadline_set_by"), "edge");
  google::rpc::DebugInfo debug;
  ASSERT_TRUE(st.details(2).UnpackTo(&debug));
  EXPECT_EQ(debug.detail(), LedgerLine(in));

  absl::StatusOr<Ledger> out = DecodeLedgerDetails(details);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(LedgerLine(*out), LedgerLine(in));
  EXPECT_EQ(out->root.reply_margin, Milliseconds(-3));
  EXPECT_EQ(out->root.policy.min_budget, Milliseconds(5));
  EXPECT_EQ(out->root.policy.deadline_change,
            LedgerPolicy::DeadlineChange::kCapped);
  EXPECT_EQ(out->root.policy.policy_budget, Milliseconds(250));
  EXPECT_EQ(out->root.queued, Microseconds(400));
  EXPECT_EQ(out->root.outbound_wait, Milliseconds(199));
  ASSERT_EQ(out->root.outbound.size(), 1u);
  const LedgerHop& middle = out->root.outbound[0].ledger.at(0);
  EXPECT_EQ(middle.host, "middle");
  ASSERT_EQ(middle.outbound.size(), 1u);
  EXPECT_FALSE(middle.outbound[0].sent);
  EXPECT_EQ(middle.outbound[0].budget, absl::ZeroDuration());
  EXPECT_FALSE(out->root.outbound[0].ledger[0].reply_margin.has_value());
}

TEST(LedgerCodecTest, TwentyHopChainStaysWholeUnderTheCap) {
  Ledger in = Chain(20);
  std::string details = EncodeLedgerStatus(4, "deadline exceeded", in);
  EXPECT_LE(details.size(), kLedgerDetailsCap);
  absl::StatusOr<Ledger> out = DecodeLedgerDetails(details);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->summarised_hops, 0u);
  EXPECT_EQ(DepthOf(out->root), 20);
}

TEST(LedgerCodecTest, SummarisesTheDeepestHopsFirst) {
  const int kHops = 120;
  Ledger in = Chain(kHops);
  std::string details = EncodeLedgerStatus(4, "deadline exceeded", in);
  EXPECT_LE(details.size(), kLedgerDetailsCap);
  absl::StatusOr<Ledger> out = DecodeLedgerDetails(details);
  ASSERT_TRUE(out.ok()) << out.status();
  int kept = DepthOf(out->root);
  EXPECT_LT(kept, kLedgerMaxDepth + 1);
  EXPECT_GT(kept, 10);
  // Every hop is either kept or counted, at the top and where it was lost.
  EXPECT_EQ(out->summarised_hops + kept, static_cast<uint32_t>(kHops));
  const LedgerHop* h = &out->root;
  while (!h->outbound.empty() && !h->outbound[0].ledger.empty()) {
    h = &h->outbound[0].ledger[0];
  }
  // The kept hops are the top ones, in order.
  EXPECT_EQ(h->host, "hop-" + std::to_string(kept - 1));
  ASSERT_EQ(h->outbound.size(), 1u);
  EXPECT_EQ(h->outbound[0].summarised_hops, out->summarised_hops);
  EXPECT_NE(LedgerLine(*out).find("hops summarised"), std::string::npos);
}

TEST(LedgerCodecTest, WideFanOutIsCutAtTheRoot) {
  Ledger in;
  in.root.host = "fan";
  in.root.code = 4;
  for (int i = 0; i < 400; ++i) {
    LedgerOutbound o;
    o.method = "/reqctx.test.Fan/Out" + std::to_string(i);
    o.took = Milliseconds(i);
    o.code = 4;
    in.root.outbound.push_back(o);
  }
  std::string details = EncodeLedgerStatus(4, std::string(5000, 'm'), in);
  EXPECT_LE(details.size(), kLedgerDetailsCap);
  absl::StatusOr<Ledger> out = DecodeLedgerDetails(details);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->root.outbound.size() + out->root.omitted_outbound, 400u);
  EXPECT_GT(out->root.outbound.size(), 10u);
}

TEST(LedgerCodecTest, CleansStringsItSends) {
  Ledger in;
  in.root.host = std::string("bad\nhost\x01", 9);
  in.root.method = std::string(1000, 'x');
  absl::StatusOr<Ledger> out =
      DecodeLedgerDetails(EncodeLedgerStatus(4, "m", in));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->root.host, "bad?host?");
  EXPECT_EQ(out->root.method.size(), kLedgerMaxString);
}

TEST(LedgerMergeTest, KeepsThePeersDetailsAndReplacesOnlyReqctxs) {
  google::rpc::Status theirs;
  theirs.set_code(4);
  theirs.set_message("backend says no");
  google::rpc::ErrorInfo foreign;
  foreign.set_domain("example.com");
  foreign.set_reason("QUOTA");
  theirs.add_details()->PackFrom(foreign);
  // A child hop's details: replaced by this hop's (which contain them).
  std::string child = EncodeLedgerStatus(4, "child", Chain(2));
  google::rpc::Status child_st;
  ASSERT_TRUE(child_st.ParseFromString(child));
  for (const auto& d : child_st.details()) *theirs.add_details() = d;

  std::optional<std::string> merged = MergeLedgerDetails(
      theirs.SerializeAsString(), 4, "ignored", ExampleLedger());
  ASSERT_TRUE(merged.has_value());
  google::rpc::Status st;
  ASSERT_TRUE(st.ParseFromString(*merged));
  EXPECT_EQ(st.code(), 4);
  EXPECT_EQ(st.message(), "backend says no");
  ASSERT_EQ(st.details_size(), 4);
  google::rpc::ErrorInfo kept;
  ASSERT_TRUE(st.details(0).UnpackTo(&kept));
  EXPECT_EQ(kept.domain(), "example.com");
  EXPECT_EQ(st.details(1).type_url(), kLedgerTypeUrl);
  absl::StatusOr<Ledger> out = DecodeLedgerDetails(*merged);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->root.host, "frontend");
}

TEST(LedgerMergeTest, LeavesDetailsItCannotReadAlone) {
  EXPECT_FALSE(MergeLedgerDetails(std::string("\xff\xff\xff", 3), 4, "m",
                                  ExampleLedger())
                   .has_value());
  google::rpc::Status big;
  big.set_code(4);
  big.set_message(std::string(kLedgerDetailsCap - 10, 'x'));
  EXPECT_FALSE(MergeLedgerDetails(big.SerializeAsString(), 4, "m",
                                  ExampleLedger())
                   .has_value());
  EXPECT_TRUE(MergeLedgerDetails("", 4, "m", ExampleLedger()).has_value());
}

// ---- hostile details -------------------------------------------------------

std::string WithLedgerBytes(const std::string& ledger_bytes,
                            const std::string& type_url = std::string(
                                kLedgerTypeUrl)) {
  google::rpc::Status st;
  st.set_code(4);
  google::protobuf::Any* any = st.add_details();
  any->set_type_url(type_url);
  any->set_value(ledger_bytes);
  return st.SerializeAsString();
}

std::string ValidLedgerBytes(reqctx::v1::BudgetLedger* l) {
  l->set_version(1);
  l->mutable_root()->set_host("h");
  return l->SerializeAsString();
}

TEST(LedgerDecodeTest, RejectsGarbageHugeAndMistyped) {
  EXPECT_EQ(DecodeLedgerDetails("").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(DecodeLedgerDetails(std::string("\x0a\xff\xff\xff\xff\x0f", 6))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::string huge = WithLedgerBytes(std::string(kLedgerDecodeLimit, 'x'));
  EXPECT_EQ(DecodeLedgerDetails(huge).status().code(),
            absl::StatusCode::kInvalidArgument);
  reqctx::v1::BudgetLedger l;
  std::string good = ValidLedgerBytes(&l);
  EXPECT_TRUE(DecodeLedgerDetails(WithLedgerBytes(good)).ok());
  // Wrong type URLs: not a ledger (the detail is skipped).
  for (const char* url :
       {"type.googleapis.com/reqctx.v1.BudgetLedgerX",
        "evil.example/reqctx.v1.BudgetLedger", "", "type.googleapis.com/"}) {
    EXPECT_EQ(DecodeLedgerDetails(WithLedgerBytes(good, url)).status().code(),
              absl::StatusCode::kNotFound)
        << url;
  }
  // The right URL over garbage; no version.
  EXPECT_EQ(DecodeLedgerDetails(WithLedgerBytes("\xff\x01garbage"))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeLedgerDetails(WithLedgerBytes("")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LedgerDecodeTest, RejectsBadFields) {
  auto rejected = [](auto mutate) {
    reqctx::v1::BudgetLedger l;
    l.set_version(1);
    mutate(l.mutable_root());
    return DecodeLedgerDetails(WithLedgerBytes(l.SerializeAsString()))
               .status()
               .code() == absl::StatusCode::kInvalidArgument;
  };
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) { h->set_host("a\nb"); }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) {
    h->set_method(std::string(kLedgerMaxString + 1, 'm'));
  }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) { h->set_work_us(-1); }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) { h->set_queued_us(INT64_MAX); }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) { h->set_code(17); }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) {
    h->add_outbound()->set_took_us(-5);
  }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) {
    h->add_outbound()->set_method(std::string("\x7f", 1));
  }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) {
    h->add_outbound()->set_peer("ipv4:10.0.0.1:1\r\nx: y");
  }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) {
    h->add_outbound()->set_peer(std::string(kLedgerMaxString + 1, 'p'));
  }));
  EXPECT_TRUE(rejected([](reqctx::v1::Hop* h) {
    for (int i = 0; i < kLedgerMaxOutbound + 1; ++i) h->add_outbound();
  }));
  EXPECT_FALSE(rejected([](reqctx::v1::Hop* h) { h->set_budget_us(-7); }));
  // A cause this version does not know: kNone.
  reqctx::v1::BudgetLedger l;
  l.set_version(1);
  l.mutable_root()->set_cause(static_cast<reqctx::v1::Cause>(77));
  absl::StatusOr<Ledger> out =
      DecodeLedgerDetails(WithLedgerBytes(l.SerializeAsString()));
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->root.cause, CauseKind::kNone);
}

// A length-delimited protobuf field `number` holding `bytes`, by hand.
std::string Field(int number, const std::string& bytes) {
  std::string out(1, static_cast<char>((number << 3) | 2));
  size_t n = bytes.size();
  do {
    uint8_t b = n & 0x7f;
    n >>= 7;
    out.push_back(static_cast<char>(b | (n ? 0x80 : 0)));
  } while (n);
  return out + bytes;
}

// Builds `depth` nested hops by hand (bytes, not the encoder).
std::string NestedHopBytes(int depth) {
  std::string hop;  // Innermost: an empty Hop.
  for (int i = 0; i < depth; ++i) {
    std::string outbound = Field(6, hop);  // Outbound{ledger(6) = hop}
    hop = Field(12, outbound);  // Hop{outbound(12) = outbound}
  }
  return hop;
}

TEST(LedgerDecodeTest, RejectsDeepNesting) {
  auto ledger_of = [](const std::string& root) {
    reqctx::v1::BudgetLedger l;
    l.set_version(1);
    std::string bytes = l.SerializeAsString();
    return WithLedgerBytes(bytes + Field(2, root));  // root(2)
  };
  EXPECT_TRUE(DecodeLedgerDetails(ledger_of(NestedHopBytes(kLedgerMaxDepth - 1))).ok());
  EXPECT_EQ(DecodeLedgerDetails(ledger_of(NestedHopBytes(kLedgerMaxDepth)))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Far deeper than protobuf's own recursion limit, within the byte limit.
  EXPECT_EQ(DecodeLedgerDetails(ledger_of(NestedHopBytes(2000))).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Bounded random mutation of valid details: the decoder never crashes, and
// whatever it accepts re-encodes within the cap and decodes again.
TEST(LedgerDecodeTest, RandomMutationsAreBoundedAndClean) {
  const int kRounds = testing::PlainOrSanitized(20000, 3000);
  std::mt19937 rng(20261206);
  const std::string seeds[] = {
      EncodeLedgerStatus(4, "deadline exceeded", ExampleLedger()),
      EncodeLedgerStatus(4, "deadline exceeded", Chain(20)),
  };
  int accepted = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::string bytes = seeds[round % 2];
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && !bytes.empty(); ++e) {
      size_t at = rng() % bytes.size();
      switch (rng() % 4) {
        case 0: bytes[at] = static_cast<char>(bytes[at] ^ (1u << (rng() % 8))); break;
        case 1: bytes[at] = static_cast<char>(rng()); break;
        case 2: bytes.resize(at); break;
        case 3: bytes.insert(at, 1 + rng() % 4, static_cast<char>(rng())); break;
      }
    }
    absl::StatusOr<Ledger> out = DecodeLedgerDetails(bytes);
    if (!out.ok()) {
      EXPECT_TRUE(out.status().code() == absl::StatusCode::kInvalidArgument ||
                  out.status().code() == absl::StatusCode::kNotFound)
          << out.status();
      continue;
    }
    ++accepted;
    std::string line = LedgerLine(*out);
    EXPECT_LE(line.size(), size_t{64} * 1024);
    std::string again = EncodeLedgerStatus(4, "m", *out);
    ASSERT_LE(again.size(), kLedgerDetailsCap);
    ASSERT_TRUE(DecodeLedgerDetails(again).ok());
  }
  // Some mutations (a byte inside a string or a number) stay valid.
  EXPECT_GT(accepted, 0);
  for (int round = 0; round < kRounds / 10; ++round) {
    std::string bytes(rng() % 600, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    absl::StatusOr<Ledger> out = DecodeLedgerDetails(bytes);
    if (out.ok()) {
      EXPECT_LE(EncodeLedgerStatus(4, "", *out).size(), kLedgerDetailsCap);
    }
  }
}

// ---- causes ----------------------------------------------------------------

TEST(CausesTest, NamesAndNumbersAreTheProtos) {
  for (int n = 0; n < kCauseKinds; ++n) {
    CauseKind k = *CauseFromNumber(n);
    std::string proto_name =
        n == 0 ? "NONE" : reqctx::v1::Cause_Name(static_cast<reqctx::v1::Cause>(n));
    EXPECT_EQ(CauseName(k), proto_name);
    EXPECT_EQ(CauseFromName(CauseName(k)), k);
  }
  EXPECT_FALSE(CauseFromNumber(kCauseKinds).has_value());
  EXPECT_FALSE(CauseFromNumber(-1).has_value());
  EXPECT_FALSE(CauseFromName("nope").has_value());
  EXPECT_TRUE(reqctx::v1::Cause_IsValid(kCauseKinds - 1));
  EXPECT_FALSE(reqctx::v1::Cause_IsValid(kCauseKinds));
}

TEST(CausesTest, StatusesCarryTheirKind) {
  absl::Status s = MakeCause(CauseKind::kServerShutdown);
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(s.message(), "canceled: server shutting down");
  EXPECT_EQ(CauseOf(s), CauseKind::kServerShutdown);
  EXPECT_EQ(CauseHop(s), "");

  absl::Status d = MakeCause(CauseKind::kCallerDeadline, "frontend");
  EXPECT_EQ(d.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(d.message(), "deadline exceeded: caller's deadline (set by frontend)");
  EXPECT_EQ(CauseOf(d), CauseKind::kCallerDeadline);
  EXPECT_EQ(CauseHop(d), "frontend");

  EXPECT_TRUE(MakeCause(CauseKind::kNone).ok());
  EXPECT_EQ(CauseOf(absl::OkStatus()), CauseKind::kNone);
  EXPECT_EQ(CauseOf(absl::CancelledError("context canceled")), CauseKind::kNone);
  absl::Status forged = absl::CancelledError("x");
  forged.SetPayload("reqctx.dev/cause", absl::Cord("NOT_A_CAUSE"));
  EXPECT_EQ(CauseOf(forged), CauseKind::kNone);
  for (int n = 1; n < kCauseKinds; ++n) {
    CauseKind k = *CauseFromNumber(n);
    EXPECT_EQ(CauseOf(MakeCause(k)), k);
    EXPECT_FALSE(CausePhrase(k).empty());
    EXPECT_NE(CauseCode(k), absl::StatusCode::kOk);
  }
}

// The glue's use: a Context canceled or timed out with a cause value; code
// switches on CauseOf(Cause(ctx)).
TEST(CausesTest, ThroughContextCause) {
  auto [ctx, cancel] = WithCancelCause(Background());
  auto [child, child_cancel] = WithCancel(ctx);
  cancel(MakeCause(CauseKind::kServerShutdown));
  EXPECT_EQ(CauseOf(Cause(child)), CauseKind::kServerShutdown);
  EXPECT_EQ(child.Err().code(), absl::StatusCode::kCancelled);

  auto [late, late_cancel] = WithTimeoutCause(
      Background(), absl::ZeroDuration(),
      MakeCause(CauseKind::kCallerDeadline, "frontend"));
  EXPECT_EQ(CauseOf(Cause(late)), CauseKind::kCallerDeadline);
  EXPECT_EQ(CauseHop(Cause(late)), "frontend");
  EXPECT_EQ(late.Err().code(), absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace reqctx
