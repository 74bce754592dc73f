// reqctx metrics: counters, gauges and histograms with Prometheus naming and
// the Prometheus text exposition format (0.0.4), kept off the hot path's
// shared cache lines.
//
//   metrics::Registry& r = metrics::Registry::Default();
//   absl::StatusOr<metrics::CounterFamily*> f = r.AddCounter(
//       "myservice_cache_misses_total", "Cache misses.", {"cache"});
//   metrics::Counter& misses = (*f)->WithLabels({"users"});   // keep it
//   misses.Increment();                                        // hot path
//   std::string page = r.Expose();                             // scrape
//
// Recording: every metric is split into kShards slots, each on its own cache
// line; a thread adds to the slot of the CPU it runs on (sched_getcpu, a
// memory read with rseq), with one relaxed atomic add and no lock. A scrape
// sums the slots, so a value read while others record is a sum of values
// each slot held at some moment of the scrape (counters never go down).
//
// Names follow Prometheus: metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label
// names [a-zA-Z_][a-zA-Z0-9_]* not starting with "__" (and not "le" for
// histograms); counters should end in _total and durations be in seconds
// (_seconds). Label values may be any bytes; they are escaped on output.
//
// Cardinality: a family keeps at most max_children label combinations
// (kMaxChildren unless given when it is added); later new combinations all
// record into one child whose every label value is "_other", so a hostile
// peer inventing label values cannot grow memory. Families keyed by an
// open-ended value should derive their cap from a bound on that value (as
// rpc_metrics.h does for methods) so that admitted values never overflow.
//
// Thread-safety: everything is safe from any thread. Recording never blocks;
// WithLabels takes the family's lock (look a child up once and keep the
// reference). Expose() takes each family's lock only to copy the list of
// children, never while formatting.
//
// Lifetime: families and children live as long as their Registry; the
// Default() registry is never destroyed, so references into it stay valid
// for the whole process (including static destructors).
#ifndef REQCTX_METRICS_METRICS_H_
#define REQCTX_METRICS_METRICS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace reqctx::metrics {

inline constexpr size_t kShards = 16;  // A power of two.
inline constexpr size_t kMaxChildren = 2000;

namespace internal {
// The slot of the calling thread's CPU, in [0, kShards).
size_t ShardIndex();
struct alignas(64) Slot {
  std::atomic<int64_t> v{0};
};
}  // namespace internal

// A monotonically increasing count (Prometheus counter).
class Counter {
 public:
  // Adds `n` (>= 0). Lock-free; touches only this CPU's cache line.
  void Increment(int64_t n = 1) {
    slots_[internal::ShardIndex()].v.fetch_add(n, std::memory_order_relaxed);
  }
  // The sum over all slots.
  int64_t Value() const;

 private:
  internal::Slot slots_[kShards];
};

// A value that goes up and down (Prometheus gauge), e.g. active calls.
class Gauge {
 public:
  void Add(int64_t n) {
    slots_[internal::ShardIndex()].v.fetch_add(n, std::memory_order_relaxed);
  }
  void Increment() { Add(1); }
  void Decrement() { Add(-1); }
  int64_t Value() const;

 private:
  internal::Slot slots_[kShards];
};

// A distribution over fixed buckets (Prometheus histogram). Observations are
// in the metric's unit (seconds for *_seconds).
class Histogram {
 public:
  // `bounds`: strictly increasing finite upper bounds (the +Inf bucket is
  // implied); must outlive the histogram (families keep them).
  explicit Histogram(const std::vector<double>* bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  // Counts `v` in the first bucket whose bound is >= v (NaN counts in +Inf
  // and adds nothing to the sum). Lock-free; this CPU's cache lines only.
  void Observe(double v);
  // Observe(absl::ToDoubleSeconds(d)).
  void ObserveDuration(absl::Duration d) { Observe(absl::ToDoubleSeconds(d)); }

  struct Snapshot {
    std::vector<int64_t> buckets;  // Per bucket (not cumulative), +Inf last.
    int64_t count = 0;
    double sum = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  // Per shard: one cell per bucket (+Inf included), then the sum (a double's
  // bits); rows padded to whole cache lines.
  size_t Stride() const;
  const std::vector<double>* const bounds_;
  const size_t stride_;
  std::unique_ptr<std::atomic<uint64_t>[]> cells_;
};

enum class Type { kCounter, kGauge, kHistogram };

// The metrics of one name, one child per combination of label values.
template <typename M>
class Family;

class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  Type type() const { return type_; }
  // Appends this family's exposition (HELP, TYPE, samples) to `out`.
  virtual void Expose(std::string& out) const = 0;

 protected:
  FamilyBase(std::string name, std::string help,
             std::vector<std::string> label_names, Type type)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        type_(type) {}

 private:
  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const Type type_;
};

template <typename M>
class Family final : public FamilyBase {
 public:
  // The child for `values` (one per label name, in order), created on first
  // use. A wrong number of values, or a new combination past max_children(),
  // gives the "_other" child. The reference stays valid for the registry's
  // lifetime: look it up once, record often.
  M& WithLabels(const std::vector<std::string_view>& values);
  M& WithLabels(std::initializer_list<std::string_view> values) {
    return WithLabels(std::vector<std::string_view>(values));
  }
  // The child for `values` if it exists, else nullptr (tests, scrapes).
  const M* Find(const std::vector<std::string_view>& values) const;

  void Expose(std::string& out) const override;
  // Histograms: the bucket bounds (empty for other types).
  const std::vector<double>& bounds() const { return bounds_; }
  // The most label combinations this family keeps (see the file comment).
  size_t max_children() const { return max_children_; }

  // For the Registry (use Registry::Add*).
  Family(std::string name, std::string help,
         std::vector<std::string> label_names, Type type,
         std::vector<double> bounds = {}, size_t max_children = kMaxChildren);

 private:
  std::unique_ptr<M> Make() const;
  const std::vector<double> bounds_;  // Histograms only.
  const size_t max_children_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<M>> children_;  // Guarded.
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Bucket bounds: `count` bounds from `start`, each `factor` times the last.
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// A set of metric families exposed together.
class Registry {
 public:
  Registry();
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The process-wide registry: reqctx's own metrics and any a service adds.
  // Never destroyed.
  static Registry& Default();

  // Adds a family, or returns the existing one if a family of that name,
  // type, label names (and bounds) exists already, so independent modules
  // may declare the same metric (the first one's max_children stays).
  // `max_children` (>= 1) bounds its label combinations (see the file
  // comment). Errors: kInvalidArgument for a bad metric or label name, bad
  // bounds, max_children 0, or a name taken with another type or labels.
  absl::StatusOr<CounterFamily*> AddCounter(std::string name, std::string help,
                                            std::vector<std::string> labels,
                                            size_t max_children = kMaxChildren);
  absl::StatusOr<GaugeFamily*> AddGauge(std::string name, std::string help,
                                        std::vector<std::string> labels,
                                        size_t max_children = kMaxChildren);
  absl::StatusOr<HistogramFamily*> AddHistogram(
      std::string name, std::string help, std::vector<std::string> labels,
      std::vector<double> bounds, size_t max_children = kMaxChildren);
  // A gauge without labels whose value `read` returns at each scrape (called
  // on the scraping thread; must be thread-safe, quick, and not call back
  // into this registry). Same errors as above; a second callback for a name
  // already taken is an error.
  absl::Status AddCallbackGauge(std::string name, std::string help,
                                std::function<double()> read);

  // One sample of a callback family: label values (one per label name, in
  // order) and the value.
  struct Sample {
    std::vector<std::string> label_values;
    double value = 0;
  };
  // A counter or gauge family (`type`: kCounter or kGauge) whose samples
  // `read` returns at each scrape, for counts kept elsewhere -- e.g. a
  // policy's own counter array exposed as
  //   reqctx_policy_events_total{event="shed_at_arrival"} 3
  // without changing the code that counts. `read` runs on the scraping
  // thread; it must be thread-safe, quick, and not call into this registry.
  // Samples with the wrong number of label values are skipped. Errors as
  // AddCounter's (and kInvalidArgument for type kHistogram).
  absl::Status AddCallbackFamily(std::string name, std::string help, Type type,
                                 std::vector<std::string> labels,
                                 std::function<std::vector<Sample>()> read);

  // Every family in the text format 0.0.4, in the order they were added.
  std::string Expose() const;

 private:
  struct CallbackGauge;
  struct CallbackFamily;
  absl::StatusOr<FamilyBase*> Add(std::unique_ptr<FamilyBase> family,
                                  const std::vector<double>* bounds,
                                  size_t max_children);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;  // Guarded by mu_.
};

// The Prometheus text format's Content-Type.
inline constexpr char kTextFormatContentType[] =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace reqctx::metrics

#endif  // REQCTX_METRICS_METRICS_H_
