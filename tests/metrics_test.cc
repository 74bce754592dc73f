// metrics: per-CPU counters, gauges, histograms, the Registry's rules and the
// exact text format 0.0.4 it exposes.
#include "metrics/metrics.h"

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

}  // namespace
}  // namespace reqctx::metrics
