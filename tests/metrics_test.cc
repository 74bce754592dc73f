// metrics: per-CPU counters, gauges, histograms, the Registry's rules and the
// exact text format 0.0.4 it exposes.
#include "metrics/metrics.h"

#include "metrics/call_log.h"
#include "metrics/rpc_metrics.h"

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reqctx::metrics {
namespace {

using ::testing::HasSubstr;

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
  a.handled[4]->Increment();
  a.deadline_at_arrival->Observe(0.3);
  ClientMethod("/t.S/A").started->Increment(2);
  Policy().retries->WithLabels({"/t.S/A"}).Increment();
  RegisterProcessGauges();
  RegisterProcessGauges();  // Idempotent.
  const std::string page = Registry::Default().Expose();
  EXPECT_THAT(page, HasSubstr("reqctx_server_handled_total{method=\"/t.S/A\",code=\"DEADLINE_EXCEEDED\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("reqctx_server_deadline_at_arrival_seconds_bucket{method=\"/t.S/A\",le=\"0.5\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("reqctx_client_started_total{method=\"/t.S/A\"} 2\n"));
  EXPECT_THAT(page, HasSubstr("reqctx_client_retries_total{method=\"/t.S/A\"} 1\n"));
  EXPECT_THAT(page, HasSubstr("# TYPE reqctx_live_timers gauge\n"));
  EXPECT_EQ(CodeName(0), "OK");
  EXPECT_EQ(CodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(CodeName(99), "UNKNOWN");
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
            "\"orphaned_s\":0}");
  r.deadline_at_arrival.reset();
  EXPECT_THAT(FormatCallLogJson(r), HasSubstr("\"deadline_at_arrival_s\":null"));
}

}  // namespace
}  // namespace reqctx::metrics
