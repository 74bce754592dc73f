// metrics: per-CPU counters, gauges, histograms, the Registry's rules and the
// exact text format 0.0.4 it exposes.
#include "metrics/metrics.h"

#include "metrics/call_log.h"
#include "metrics/rpc_metrics.h"

#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reqctx::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(Metrics, CounterFamilyExposesExactText) {
  Registry r;
  absl::StatusOr<CounterFamily*> f =
      r.AddCounter("test_calls_total", "Calls.\nSecond \\ line.", {"method", "code"});
  ASSERT_TRUE(f.ok()) << f.status();
  (*f)->WithLabels({"/a.B/C", "OK"}).Increment(3);
  (*f)->WithLabels({"x\"y\\z\nw", "CANCELLED"}).Increment();
  EXPECT_EQ(r.Expose(),
            "# HELP test_calls_total Calls.\\nSecond \\\\ line.\n"
            "# TYPE test_calls_total counter\n"
            "test_calls_total{method=\"/a.B/C\",code=\"OK\"} 3\n"
            "test_calls_total{method=\"x\\\"y\\\\z\\nw\",code=\"CANCELLED\"} 1\n");
}

TEST(Metrics, HistogramBucketsAreCumulativeWithSumAndCount) {
  Registry r;
  absl::StatusOr<HistogramFamily*> f =
      r.AddHistogram("test_latency_seconds", "Latency.", {}, {0.01, 0.1, 1});
  ASSERT_TRUE(f.ok()) << f.status();
  Histogram& h = (*f)->WithLabels({});
  h.Observe(0.005);
  h.Observe(0.01);   // On a bound: counts in that bucket (le is <=).
  h.Observe(0.5);
  h.ObserveDuration(absl::Seconds(2));
  h.Observe(std::numeric_limits<double>::quiet_NaN());  // +Inf, not summed.
  EXPECT_EQ(r.Expose(),
            "# HELP test_latency_seconds Latency.\n"
            "# TYPE test_latency_seconds histogram\n"
            "test_latency_seconds_bucket{le=\"0.01\"} 2\n"
            "test_latency_seconds_bucket{le=\"0.1\"} 2\n"
            "test_latency_seconds_bucket{le=\"1\"} 3\n"
            "test_latency_seconds_bucket{le=\"+Inf\"} 5\n"
            "test_latency_seconds_sum 2.515\n"
            "test_latency_seconds_count 5\n");
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count, 5);
  EXPECT_EQ(s.buckets, (std::vector<int64_t>{2, 0, 1, 2}));
}

TEST(Metrics, GaugesAndCallbackGauges) {
  Registry r;
  GaugeFamily* g = *r.AddGauge("test_active", "Active.", {"method"});
  Gauge& a = g->WithLabels({"m"});
  a.Increment();
  a.Increment();
  a.Decrement();
  double v = 7.25;
  ASSERT_TRUE(r.AddCallbackGauge("test_live", "Live.", [&v] { return v; }).ok());
  EXPECT_THAT(r.Expose(), HasSubstr("test_active{method=\"m\"} 1\n"));
  EXPECT_THAT(r.Expose(), HasSubstr("# TYPE test_live gauge\ntest_live 7.25\n"));
  v = 3;
  EXPECT_THAT(r.Expose(), HasSubstr("test_live 3\n"));
}

TEST(Metrics, RegistryRejectsBadNamesAndConflictsButSharesEqualFamilies) {
  Registry r;
  EXPECT_FALSE(r.AddCounter("1bad", "", {}).ok());
  EXPECT_FALSE(r.AddCounter("bad-name", "", {}).ok());
  EXPECT_FALSE(r.AddCounter("ok_total", "", {"__reserved"}).ok());
  EXPECT_FALSE(r.AddCounter("ok_total", "", {"bad label"}).ok());
  EXPECT_FALSE(r.AddHistogram("h_seconds", "", {"le"}, {1}).ok());
  EXPECT_FALSE(r.AddHistogram("h_seconds", "", {}, {1, 1}).ok());
  EXPECT_FALSE(r.AddHistogram("h_seconds", "", {}, {1, INFINITY}).ok());

  CounterFamily* a = *r.AddCounter("shared_total", "", {"k"});
  absl::StatusOr<CounterFamily*> b = r.AddCounter("shared_total", "", {"k"});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a, *b);  // Two modules declaring the same metric share it.
  EXPECT_FALSE(r.AddCounter("shared_total", "", {"other"}).ok());
  EXPECT_FALSE(r.AddGauge("shared_total", "", {"k"}).ok());
  ASSERT_TRUE(r.AddHistogram("h2_seconds", "", {}, {1, 2}).ok());
  EXPECT_FALSE(r.AddHistogram("h2_seconds", "", {}, {1, 3}).ok());
  ASSERT_TRUE(r.AddCallbackGauge("cb", "", [] { return 1.0; }).ok());
  EXPECT_FALSE(r.AddCallbackGauge("cb", "", [] { return 2.0; }).ok());
}

TEST(Metrics, CallbackFamilyExposesCountsKeptElsewhere) {
  Registry r;
  // Counts kept by other code (e.g. a policy's own counter array).
  std::atomic<int64_t> shed{3}, admitted{40};
  ASSERT_TRUE(r.AddCallbackFamily(
                   "test_policy_events_total", "Policy events.", Type::kCounter,
                   {"event"},
                   [&] {
                     return std::vector<Registry::Sample>{
                         {{"shed_at_arrival"}, static_cast<double>(shed.load())},
                         {{"admitted"}, static_cast<double>(admitted.load())},
                         {{"wrong", "arity"}, 1}};
                   })
                  .ok());
  EXPECT_EQ(r.Expose(),
            "# HELP test_policy_events_total Policy events.\n"
            "# TYPE test_policy_events_total counter\n"
            "test_policy_events_total{event=\"shed_at_arrival\"} 3\n"
            "test_policy_events_total{event=\"admitted\"} 40\n");
  shed = 4;
  EXPECT_THAT(r.Expose(), HasSubstr("{event=\"shed_at_arrival\"} 4\n"));
  EXPECT_FALSE(r.AddCallbackFamily("test_policy_events_total", "", Type::kCounter,
                                   {"event"}, [] { return std::vector<Registry::Sample>{}; })
                   .ok());
  EXPECT_FALSE(r.AddCallbackFamily("h", "", Type::kHistogram, {},
                                   [] { return std::vector<Registry::Sample>{}; })
                   .ok());
  EXPECT_FALSE(r.AddCallbackFamily("ok_total", "", Type::kCounter, {"bad label"},
                                   [] { return std::vector<Registry::Sample>{}; })
                   .ok());
}

TEST(Metrics, CardinalityIsCappedWithAnOtherChild) {
  Registry r;
  CounterFamily* f = *r.AddCounter("test_capped_total", "", {"method"});
  for (size_t i = 0; i < kMaxChildren + 100; ++i) {
    f->WithLabels({"m" + std::to_string(i)}).Increment();
  }
  const Counter* other = f->Find({"_other"});
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->Value(), 100);  // The first kMaxChildren got their own.
  EXPECT_EQ(f->Find({"m0"})->Value(), 1);
  f->WithLabels({"a", "b"}).Increment();  // Wrong arity: _other too.
  EXPECT_EQ(other->Value(), 101);
}

TEST(Metrics, ConcurrentRecordingLosesNothing) {
  Registry r;
  Counter& c = (*r.AddCounter("test_total", "", {}))->WithLabels({});
  Histogram& h = (*r.AddHistogram("test_seconds", "", {}, {0.5}))->WithLabels({});
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  std::atomic<bool> stop{false};
  std::thread scraper([&] {
    while (!stop.load()) (void)r.Expose();  // Scrapes race the recording.
  });
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        c.Increment();
        h.Observe(t % 2 == 0 ? 0.25 : 1.0);
      }
    });
  }
  for (auto& t : threads) t.join();
  stop.store(true);
  scraper.join();
  EXPECT_EQ(c.Value(), kThreads * kPerThread);
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.count, kThreads * kPerThread);
  EXPECT_EQ(s.buckets[0], kThreads / 2 * kPerThread);
  EXPECT_DOUBLE_EQ(s.sum, kThreads / 2 * kPerThread * 1.25);
}

TEST(RpcMetrics, FamiliesRegisterAndMethodHandlesAreShared) {
  DeclareMethod("/t.S/A");  // No descriptor in this test.
  const ServerMethodMetrics& a = ServerMethod("/t.S/A");
  EXPECT_EQ(&a, &ServerMethod(std::string("/t.S/A")));  // Cached per thread.
  const ServerMethodMetrics* other_thread = nullptr;
  std::thread([&] { other_thread = &ServerMethod("/t.S/A"); }).join();
  EXPECT_EQ(other_thread, &a);  // And shared across threads.
  a.handled->Get(4, CauseKind::kNone).Increment();
  a.handled->Get(1, CauseKind::kServerShutdown).Increment(3);
  a.handled->Get(99, CauseKind::kShed).Increment();  // UNKNOWN code.
  a.deadline_at_arrival->Observe(0.3);
  ClientMethod("/t.S/A").started->Increment(2);
  Policy().retries->WithLabels({"/t.S/A"}).Increment();
  RegisterProcessGauges();
  RegisterProcessGauges();  // Idempotent.
  const std::string page = Registry::Default().Expose();
  EXPECT_THAT(page, HasSubstr("reqctx_server_handled_total{method=\"/t.S/A\",code=\"DEADLINE_EXCEEDED\",cause=\"NONE\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("reqctx_server_handled_total{method=\"/t.S/A\",code=\"CANCELLED\",cause=\"SERVER_SHUTDOWN\"} 3\n"));
  EXPECT_THAT(page, HasSubstr("reqctx_server_handled_total{method=\"/t.S/A\",code=\"UNKNOWN\",cause=\"SHED\"} 1\n"));
  // Only the combinations used: no zero series for the other causes.
  EXPECT_THAT(page, Not(HasSubstr("code=\"OK\",cause=\"HEDGE_LOST\"")));
  EXPECT_THAT(page, HasSubstr("reqctx_server_deadline_at_arrival_seconds_bucket{method=\"/t.S/A\",le=\"0.5\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("reqctx_client_started_total{method=\"/t.S/A\"} 2\n"));
  EXPECT_THAT(page, HasSubstr("reqctx_client_retries_total{method=\"/t.S/A\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("# TYPE reqctx_live_timers gauge\n"));
  EXPECT_EQ(CodeName(0), "OK");
  EXPECT_EQ(CodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(CodeName(99), "UNKNOWN");
}

TEST(Metrics, FamilyCapIsPerFamilyAndValidated) {
  Registry r;
  CounterFamily* f = *r.AddCounter("capped_total", "C.", {"a", "b"}, 3);
  EXPECT_EQ(f->max_children(), 3u);
  Counter* first = &f->WithLabels({"1", "x"});
  f->WithLabels({"2", "x"});
  f->WithLabels({"3", "x"});  // The third child: the cap.
  Counter& overflow = f->WithLabels({"4", "x"});
  EXPECT_EQ(&overflow, f->Find({"_other", "_other"}));
  EXPECT_EQ(&f->WithLabels({"1", "x"}), first);  // Existing ones stay.
  EXPECT_EQ(r.AddCounter("zero_total", "Z.", {"a"}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The label budget with multi-label families: hundreds of invented method
// names, then more known methods than the table admits. Every admitted
// method keeps a series of its own for every combination of every family
// ({method,code} 17 per method, {method,reason,criticality} 18 per
// method), invented names share method="_unknown", methods past the table
// share method="_other" with all their combinations, and no family ever
// falls back to its all-"_other" overflow child. (Before: the table
// admitted 2,000 methods but each family kept 2,000 children, so after ~118
// methods a real method's series disappeared into
// {method="_other",code="_other"}.)
TEST(RpcMetrics, MultiLabelFamiliesKeepEveryAdmittedMethodsSeries) {
  const std::string real = "/t.S/Real";
  DeclareMethod(real);
  for (int i = 0; i < 300; ++i) {
    const std::string invented = absl::StrCat("/inv.S/M", i);
    EXPECT_EQ(MethodLabel(invented), kUnknownMethod);
    ServerMethod(invented).handled->Get(12, CauseKind::kNone).Increment();  // UNIMPLEMENTED.
    ClientMethod(invented).handled[12]->Increment();
    PolicyMethod(invented).rejected[2][1]->Increment();
  }
  EXPECT_EQ(&ServerMethod("/inv.S/M1"), &ServerMethod("/inv.S/M2"));
  // The real method after the invented ones: every series its own.
  for (int c = 0; c < kCodes; ++c) {
    ServerMethod(real).handled->Get(c, CauseKind::kNone).Increment(c + 1);
  }
  for (int reason = 0; reason < kPolicyRejectReasons; ++reason) {
    for (int crit = 0; crit < kCriticalities; ++crit) {
      PolicyMethod(real).rejected[reason][crit]->Increment(
          reason * kCriticalities + crit + 1);
    }
  }
  // Fill the tables past kMaxMethods with known methods.
  for (size_t i = 0; i < kMaxMethods + 20; ++i) {
    const std::string known = absl::StrCat("/k.S/M", i);
    DeclareMethod(known);
    ServerMethod(known).handled->Get(0, CauseKind::kNone).Increment();
    for (int reason = 0; reason < kPolicyRejectReasons; ++reason) {
      for (int crit = 0; crit < kCriticalities; ++crit) {
        PolicyMethod(known).rejected[reason][crit]->Increment();
      }
    }
  }
  const std::string page = Registry::Default().Expose();
  // series -> value, -1 if absent.
  std::map<std::string, double> samples;
  for (size_t start = 0, end; start < page.size(); start = end + 1) {
    end = page.find('\n', start);
    if (end == std::string::npos) end = page.size();
    const size_t space = page.rfind(' ', end);
    if (page[start] == '#' || space == std::string::npos || space < start) {
      continue;
    }
    samples[page.substr(start, space - start)] =
        std::strtod(page.c_str() + space + 1, nullptr);
  }
  auto sample = [&](const std::string& series) {
    auto it = samples.find(series);
    return it == samples.end() ? -1.0 : it->second;
  };
  for (int c = 0; c < kCodes; ++c) {
    EXPECT_EQ(sample(absl::StrCat("reqctx_server_handled_total{method=\"", real,
                                  "\",code=\"", std::string(CodeName(c)),
                                  "\",cause=\"NONE\"}")),
              c + 1)
        << CodeName(c);
  }
  for (int reason = 0; reason < kPolicyRejectReasons; ++reason) {
    for (int crit = 0; crit < kCriticalities; ++crit) {
      EXPECT_EQ(sample(absl::StrCat(
                    "reqctx_policy_rejected_total{method=\"", real,
                    "\",reason=\"", std::string(PolicyRejectReasonName(reason)),
                    "\",criticality=\"", std::string(CriticalityLabel(crit)), "\"}")),
                reason * kCriticalities + crit + 1);
    }
  }
  EXPECT_EQ(sample("reqctx_server_handled_total{method=\"_unknown\","
                   "code=\"UNIMPLEMENTED\",cause=\"NONE\"}"),
            300);
  EXPECT_EQ(sample("reqctx_client_handled_total{method=\"_unknown\","
                   "code=\"UNIMPLEMENTED\"}"),
            300);
  EXPECT_EQ(sample("reqctx_policy_rejected_total{method=\"_unknown\","
                   "reason=\"queue_full\",criticality=\"default\"}"),
            300);
  // Known methods: each admitted one has all its series; the ones past the
  // table (a few were admitted before this test) count under "_other".
  int own_server = 0, own_policy = 0;
  for (size_t i = 0; i < kMaxMethods + 20; ++i) {
    const std::string known = absl::StrCat("/k.S/M", i);
    if (sample(absl::StrCat("reqctx_server_handled_total{method=\"", known,
                            "\",code=\"OK\",cause=\"NONE\"}")) == 1) {
      ++own_server;
    }
    const double first = sample(absl::StrCat(
        "reqctx_policy_rejected_total{method=\"", known,
        "\",reason=\"min_budget\",criticality=\"sheddable\"}"));
    if (first != 1) continue;
    ++own_policy;
    for (int reason = 0; reason < kPolicyRejectReasons; ++reason) {
      for (int crit = 0; crit < kCriticalities; ++crit) {
        EXPECT_EQ(sample(absl::StrCat(
                      "reqctx_policy_rejected_total{method=\"", known,
                      "\",reason=\"", std::string(PolicyRejectReasonName(reason)),
                      "\",criticality=\"", std::string(CriticalityLabel(crit)), "\"}")),
                  1)
            << known;
      }
    }
  }
  EXPECT_GE(own_server, static_cast<int>(kMaxMethods) - 5);
  EXPECT_LT(own_server, static_cast<int>(kMaxMethods));
  EXPECT_GE(own_policy, static_cast<int>(kMaxMethods) - 5);
  EXPECT_LT(own_policy, static_cast<int>(kMaxMethods));
  EXPECT_EQ(sample("reqctx_server_handled_total{method=\"_other\",code=\"OK\","
                   "cause=\"NONE\"}"),
            static_cast<double>(kMaxMethods + 20 - own_server));
  EXPECT_EQ(sample("reqctx_policy_rejected_total{method=\"_other\","
                   "reason=\"evicted\",criticality=\"sheddable\"}"),
            static_cast<double>(kMaxMethods + 20 - own_policy));
  // No family fell back to its overflow child.
  EXPECT_EQ(page.find("code=\"_other\""), std::string::npos);
  EXPECT_EQ(page.find("reason=\"_other\""), std::string::npos);
}

TEST(CallLog, JsonLineHasEveryFieldEscaped) {
  CallLogRecord r;
  r.side = "server";
  r.method = "/a\"b\n";
  r.code = 1;
  r.trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  r.span_id = "00f067aa0ba902b7";
  r.parent_span_id = "";
  r.deadline_at_arrival = absl::Milliseconds(250);
  r.duration = absl::Microseconds(1500);
  r.orphaned = absl::ZeroDuration();
  EXPECT_EQ(FormatCallLogJson(r),
            "{\"side\":\"server\",\"method\":\"/a\\\"b\\u000a\",\"code\":\"CANCELLED\","
            "\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"span_id\":\"00f067aa0ba902b7\","
            "\"parent_span_id\":\"\",\"deadline_at_arrival_s\":0.25,\"duration_s\":0.0015,"
            "\"orphaned_s\":0,\"cause\":\"NONE\"}");
  r.cause = CauseName(CauseKind::kClientCancel);
  EXPECT_THAT(FormatCallLogJson(r), HasSubstr(",\"cause\":\"CLIENT_CANCEL\"}"));
  r.deadline_at_arrival.reset();
  EXPECT_THAT(FormatCallLogJson(r), HasSubstr("\"deadline_at_arrival_s\":null"));
}

}  // namespace
}  // namespace reqctx::metrics
