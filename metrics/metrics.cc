#include "metrics/metrics.h"

#include <sched.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"

namespace reqctx::metrics {
namespace internal {

size_t ShardIndex() {
  const int cpu = sched_getcpu();
  if (cpu >= 0) return static_cast<size_t>(cpu) & (kShards - 1);
  // No CPU number (very old kernels): a fixed slot per thread.
  thread_local const size_t slot =
      std::hash<std::thread::id>()(std::this_thread::get_id()) & (kShards - 1);
  return slot;
}

}  // namespace internal

namespace {

int64_t SumSlots(const internal::Slot (&slots)[kShards]) {
  int64_t sum = 0;
  for (const internal::Slot& s : slots) {
    sum += s.v.load(std::memory_order_relaxed);
  }
  return sum;
}

bool IsMetricName(std::string_view n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool IsLabelName(std::string_view n) {
  if (n.empty() || n.substr(0, 2) == "__") return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// Label values: backslash, double quote and newline escaped (0.0.4).
void AppendLabelValue(std::string_view v, std::string& out) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
}

// HELP text: backslash and newline escaped.
void AppendHelp(std::string_view v, std::string& out) {
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
}

// Go's strconv 'g'-like shortest form that parses back exactly, and the
// format's spellings of the specials.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  char buf[32];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// `{a="x",b="y"` plus `extra` (e.g. `le="0.5"`), then `}`; "" if nothing.
std::string LabelBlock(const std::vector<std::string>& names,
                       const std::vector<std::string>& values,
                       std::string_view extra = {}) {
  if (names.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out.push_back(',');
    out += names[i];
    out += "=\"";
    AppendLabelValue(values[i], out);
    out.push_back('"');
  }
  if (!extra.empty()) {
    if (!names.empty()) out.push_back(',');
    out.append(extra);
  }
  out.push_back('}');
  return out;
}

const char* TypeName(Type t) {
  switch (t) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void AppendHeader(const FamilyBase& f, std::string& out) {
  out += "# HELP ";
  out += f.name();
  out.push_back(' ');
  AppendHelp(f.help(), out);
  out += "\n# TYPE ";
  out += f.name();
  out.push_back(' ');
  out += TypeName(f.type());
  out.push_back('\n');
}

void AppendSample(std::string_view name, const std::string& labels,
                  std::string_view value, std::string& out) {
  out.append(name);
  out += labels;
  out.push_back(' ');
  out.append(value);
  out.push_back('\n');
}

void AppendChild(const std::string& name, const std::vector<std::string>& names,
                 const std::vector<std::string>& values, const Counter& c,
                 std::string& out) {
  AppendSample(name, LabelBlock(names, values), absl::StrCat(c.Value()), out);
}

void AppendChild(const std::string& name, const std::vector<std::string>& names,
                 const std::vector<std::string>& values, const Gauge& g,
                 std::string& out) {
  AppendSample(name, LabelBlock(names, values), absl::StrCat(g.Value()), out);
}

void AppendChild(const std::string& name, const std::vector<std::string>& names,
                 const std::vector<std::string>& values, const Histogram& h,
                 std::string& out) {
  const Histogram::Snapshot s = h.Read();
  int64_t cumulative = 0;
  const std::string bucket = name + "_bucket";
  for (size_t i = 0; i < s.buckets.size(); ++i) {
    cumulative += s.buckets[i];
    const std::string le =
        i < h.bounds().size() ? FormatValue(h.bounds()[i]) : "+Inf";
    AppendSample(bucket, LabelBlock(names, values, "le=\"" + le + "\""),
                 absl::StrCat(cumulative), out);
  }
  AppendSample(name + "_sum", LabelBlock(names, values), FormatValue(s.sum),
               out);
  AppendSample(name + "_count", LabelBlock(names, values),
               absl::StrCat(cumulative), out);
}

bool ValidBounds(const std::vector<double>& b) {
  for (size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(b[i])) return false;
    if (i > 0 && !(b[i] > b[i - 1])) return false;
  }
  return true;
}

}  // namespace

int64_t Counter::Value() const { return SumSlots(slots_); }
int64_t Gauge::Value() const { return SumSlots(slots_); }

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds),
      stride_(Stride()),
      cells_(new std::atomic<uint64_t>[kShards * stride_]) {
  for (size_t i = 0; i < kShards * stride_; ++i) {
    cells_[i].store(0, std::memory_order_relaxed);
  }
}

size_t Histogram::Stride() const {
  const size_t cells = bounds_->size() + 2;  // Buckets, +Inf, sum.
  constexpr size_t kPerLine = 64 / sizeof(uint64_t);
  return (cells + kPerLine - 1) / kPerLine * kPerLine;
}

void Histogram::Observe(double v) {
  const std::vector<double>& b = *bounds_;
  size_t i = 0;
  while (i < b.size() && !(v <= b[i])) ++i;  // NaN falls through to +Inf.
  std::atomic<uint64_t>* row = &cells_[internal::ShardIndex() * stride_];
  row[i].fetch_add(1, std::memory_order_relaxed);
  if (std::isnan(v)) return;
  std::atomic<uint64_t>& sum = row[b.size() + 1];
  uint64_t old = sum.load(std::memory_order_relaxed);
  while (!sum.compare_exchange_weak(
      old, std::bit_cast<uint64_t>(std::bit_cast<double>(old) + v),
      std::memory_order_relaxed)) {
  }
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  const size_t n = bounds_->size() + 1;
  s.buckets.assign(n, 0);
  for (size_t shard = 0; shard < kShards; ++shard) {
    const std::atomic<uint64_t>* row = &cells_[shard * stride_];
    for (size_t i = 0; i < n; ++i) {
      s.buckets[i] += static_cast<int64_t>(row[i].load(std::memory_order_relaxed));
    }
    s.sum += std::bit_cast<double>(row[n].load(std::memory_order_relaxed));
  }
  for (int64_t c : s.buckets) s.count += c;
  return s;
}

template <typename M>
Family<M>::Family(std::string name, std::string help,
                  std::vector<std::string> label_names, Type type,
                  std::vector<double> bounds, size_t max_children)
    : FamilyBase(std::move(name), std::move(help), std::move(label_names),
                 type),
      bounds_(std::move(bounds)),
      max_children_(max_children) {}

template <typename M>
std::unique_ptr<M> Family<M>::Make() const {
  if constexpr (std::is_same_v<M, Histogram>) {
    return std::make_unique<Histogram>(&bounds_);
  } else {
    return std::make_unique<M>();
  }
}

template <typename M>
M& Family<M>::WithLabels(const std::vector<std::string_view>& values) {
  std::vector<std::string> key;
  if (values.size() == label_names().size()) {
    key.assign(values.begin(), values.end());
  } else {
    key.assign(label_names().size(), "_other");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(key);
  if (it != children_.end()) return *it->second;
  if (children_.size() >= max_children_) {
    key.assign(label_names().size(), "_other");
    it = children_.find(key);
    if (it != children_.end()) return *it->second;
  }
  std::unique_ptr<M>& slot = children_[std::move(key)];
  slot = Make();
  return *slot;
}

template <typename M>
const M* Family<M>::Find(const std::vector<std::string_view>& values) const {
  std::vector<std::string> key(values.begin(), values.end());
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(key);
  return it == children_.end() ? nullptr : it->second.get();
}

template <typename M>
void Family<M>::Expose(std::string& out) const {
  std::vector<std::pair<const std::vector<std::string>*, const M*>> children;
  {
    std::lock_guard<std::mutex> lock(mu_);
    children.reserve(children_.size());
    // Children are never removed: the pointers stay valid after unlocking.
    for (const auto& [labels, m] : children_) children.emplace_back(&labels, m.get());
  }
  AppendHeader(*this, out);
  for (const auto& [labels, m] : children) {
    AppendChild(name(), label_names(), *labels, *m, out);
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  for (int i = 0; i < count; ++i, start *= factor) b.push_back(start);
  return b;
}

// A gauge family whose single sample is read at scrape time.
struct Registry::CallbackGauge final : FamilyBase {
  CallbackGauge(std::string name, std::string help, std::function<double()> r)
      : FamilyBase(std::move(name), std::move(help), {}, Type::kGauge),
        read(std::move(r)) {}
  void Expose(std::string& out) const override {
    AppendHeader(*this, out);
    AppendSample(name(), "", FormatValue(read()), out);
  }
  const std::function<double()> read;
};

// A family whose samples are read at scrape time.
struct Registry::CallbackFamily final : FamilyBase {
  CallbackFamily(std::string name, std::string help, Type type,
                 std::vector<std::string> labels,
                 std::function<std::vector<Sample>()> r)
      : FamilyBase(std::move(name), std::move(help), std::move(labels), type),
        read(std::move(r)) {}
  void Expose(std::string& out) const override {
    AppendHeader(*this, out);
    for (const Sample& sample : read()) {
      if (sample.label_values.size() != label_names().size()) continue;
      AppendSample(name(), LabelBlock(label_names(), sample.label_values),
                   FormatValue(sample.value), out);
    }
  }
  const std::function<std::vector<Sample>()> read;
};

Registry::Registry() = default;
Registry::~Registry() = default;

Registry& Registry::Default() {
  static Registry* const registry = new Registry();
  return *registry;
}

absl::StatusOr<FamilyBase*> Registry::Add(std::unique_ptr<FamilyBase> family,
                                          const std::vector<double>* bounds,
                                          size_t max_children) {
  if (max_children < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics: max_children of ", family->name(), " must be at least 1"));
  }
  if (!IsMetricName(family->name())) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics: invalid metric name \"", family->name(), "\""));
  }
  for (const std::string& l : family->label_names()) {
    if (!IsLabelName(l) ||
        (family->type() == Type::kHistogram && l == "le")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics: invalid label name \"", l, "\" for ", family->name()));
    }
  }
  if (bounds != nullptr && !ValidBounds(*bounds)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics: bucket bounds of ", family->name(),
        " must be finite and strictly increasing"));
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::unique_ptr<FamilyBase>& f : families_) {
    if (f->name() != family->name()) continue;
    auto is_callback = [](FamilyBase* x) {
      return dynamic_cast<CallbackGauge*>(x) != nullptr ||
             dynamic_cast<CallbackFamily*>(x) != nullptr;
    };
    const bool callback = is_callback(f.get()) || is_callback(family.get());
    bool same = !callback && f->type() == family->type() &&
                f->label_names() == family->label_names();
    if (same && bounds != nullptr) {
      same = static_cast<const HistogramFamily*>(f.get())->bounds() == *bounds;
    }
    if (!same) {
      return absl::InvalidArgumentError(absl::StrCat(
          "metrics: \"", family->name(),
          "\" is already registered with another type or labels"));
    }
    return f.get();
  }
  families_.push_back(std::move(family));
  return families_.back().get();
}

absl::StatusOr<CounterFamily*> Registry::AddCounter(
    std::string name, std::string help, std::vector<std::string> labels,
    size_t max_children) {
  absl::StatusOr<FamilyBase*> f =
      Add(std::make_unique<CounterFamily>(std::move(name), std::move(help),
                                          std::move(labels), Type::kCounter,
                                          std::vector<double>{}, max_children),
          nullptr, max_children);
  if (!f.ok()) return f.status();
  return static_cast<CounterFamily*>(*f);
}

absl::StatusOr<GaugeFamily*> Registry::AddGauge(
    std::string name, std::string help, std::vector<std::string> labels,
    size_t max_children) {
  absl::StatusOr<FamilyBase*> f =
      Add(std::make_unique<GaugeFamily>(std::move(name), std::move(help),
                                        std::move(labels), Type::kGauge,
                                        std::vector<double>{}, max_children),
          nullptr, max_children);
  if (!f.ok()) return f.status();
  return static_cast<GaugeFamily*>(*f);
}

absl::StatusOr<HistogramFamily*> Registry::AddHistogram(
    std::string name, std::string help, std::vector<std::string> labels,
    std::vector<double> bounds, size_t max_children) {
  std::vector<double> copy = bounds;
  absl::StatusOr<FamilyBase*> f = Add(
      std::make_unique<HistogramFamily>(std::move(name), std::move(help),
                                        std::move(labels), Type::kHistogram,
                                        std::move(bounds), max_children),
      &copy, max_children);
  if (!f.ok()) return f.status();
  return static_cast<HistogramFamily*>(*f);
}

absl::Status Registry::AddCallbackGauge(std::string name, std::string help,
                                        std::function<double()> read) {
  return Add(std::make_unique<CallbackGauge>(std::move(name), std::move(help),
                                             std::move(read)),
             nullptr, kMaxChildren)
      .status();
}

absl::Status Registry::AddCallbackFamily(
    std::string name, std::string help, Type type,
    std::vector<std::string> labels,
    std::function<std::vector<Sample>()> read) {
  if (type == Type::kHistogram) {
    return absl::InvalidArgumentError(
        "metrics: a callback family is a counter or a gauge");
  }
  return Add(std::make_unique<CallbackFamily>(std::move(name), std::move(help),
                                              type, std::move(labels),
                                              std::move(read)),
             nullptr, kMaxChildren)
      .status();
}

std::string Registry::Expose() const {
  std::vector<const FamilyBase*> families;
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Families are never removed: the pointers stay valid after unlocking.
    for (const auto& f : families_) families.push_back(f.get());
  }
  std::string out;
  for (const FamilyBase* f : families) f->Expose(out);
  return out;
}

}  // namespace reqctx::metrics
