// //bench:context_bench -- reqctx's Context against Go's context and
// std::stop_source, case for case.
//
// Each "Benchmark..." case mirrors the Go benchmark of the same name in Go's
// src/context/benchmark_test.go (Go 1.19), with the same work per iteration,
// so that bench/run_all.sh can join the two outputs by name. Cases named
// "StopSource/<Go name>" do the nearest std::stop_source equivalent of that
// case. A few reqctx-only cases (no Go counterpart) measure the issue's
// targets directly: LinkedChildCancel, WithTimeoutCancel, WithValue and
// CheckCanceled/DoneHoisted.
//
// Mapping of Go's benchmark mechanics:
//   * b.N loop                -> `for (auto _ : state)`.
//   * b.RunParallel(...)      -> ->ThreadPerCpu()->UseRealTime(): one thread per
//     CPU, as Go runs GOMAXPROCS (= CPUs) goroutines. With UseRealTime, Google
//     Benchmark reports wall time / iterations summed over all threads, which
//     is exactly RunParallel's ns/op. Per-goroutine setup inside the closure
//     (e.g. `wcf := make(...)`) becomes per-thread setup before the loop.
//   * a goroutine per op      -> a std::thread per op (DeepValueNewGoRoutine).
//   * `ctx, _ := WithCancel()` -> reqctx cancels a context when its last
//     CancelFunc is dropped (Go leaves it to the GC, uncanceled). To do the
//     same work as Go's loop body, the CancelFuncs are kept until the end of
//     the iteration; dropping them (a cancel of each node) is part of the
//     measured cost, since a C++ caller cannot avoid it.
//   * Go's B/op, allocs/op    -> counters bytes_per_op and allocs_per_op, from
//     the operator new replaced below (requested bytes, not size classes).
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <new>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "context/core.h"

// --- Allocation counting -----------------------------------------------------
// Thread-local, so counting adds no shared-cache-line traffic to the parallel
// cases. Each benchmark thread reports its own delta; Google Benchmark sums
// counters over threads and kAvgIterations divides by total iterations, like
// Go's -benchmem. Allocations made on threads the benchmark did not start
// (reqctx's timer thread) are not counted; none happen in these loops.
namespace {
thread_local uint64_t t_alloc_bytes = 0;
thread_local uint64_t t_alloc_count = 0;

void* CountedAlloc(std::size_t n, std::size_t align) {
  t_alloc_bytes += n;
  ++t_alloc_count;
  void* p = align <= alignof(std::max_align_t)
                ? std::malloc(n == 0 ? 1 : n)
                : std::aligned_alloc(align, (n + align - 1) / align * align);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

// libstdc++ routes the nothrow and sized forms through these.
void* operator new(std::size_t n) { return CountedAlloc(n, 0); }
void* operator new[](std::size_t n) { return CountedAlloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return CountedAlloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return CountedAlloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}

namespace {

using benchmark::State;
using reqctx::Background;
using reqctx::CancelFunc;
using reqctx::Context;
using reqctx::Key;

// Counts this thread's allocations from construction to Report().
class AllocCounter {
 public:
  AllocCounter() : bytes_(t_alloc_bytes), count_(t_alloc_count) {}
  void Report(State& state) const {
    state.counters["bytes_per_op"] = benchmark::Counter(
        static_cast<double>(t_alloc_bytes - bytes_),
        benchmark::Counter::kAvgIterations);
    state.counters["allocs_per_op"] = benchmark::Counter(
        static_cast<double>(t_alloc_count - count_),
        benchmark::Counter::kAvgIterations);
  }

 private:
  uint64_t bytes_;
  uint64_t count_;
};

// Go's `for i := 0; i < 100; i++ { x /= x + 1 }`: a dependent chain of 100
// 64-bit divisions (Go's int is 64 bits). x is laundered through
// DoNotOptimize so the compiler cannot fold the chain (x starts at 0).
inline void DivideLoop(int64_t& x) {
  benchmark::DoNotOptimize(x);
  for (int i = 0; i < 100; ++i) x /= x + 1;
  benchmark::DoNotOptimize(x);
}

// std::stop_source's "child linked to a parent": a source whose stop is
// requested by a std::stop_callback registered on the parent's token.
struct RequestStop {
  std::stop_source* child;
  void operator()() const noexcept { child->request_stop(); }
};
struct StopLink {
  explicit StopLink(const std::stop_token& parent)
      : callback(parent, RequestStop{&source}) {}
  std::stop_source source;  // Declared first: the callback refers to it.
  std::stop_callback<RequestStop> callback;
};

const std::string& StringValue() {
  static const std::string* const v = new std::string("value");
  return *v;
}

constexpr Key<std::string> kStringKey("key");
constexpr Key<int> kMissingKey("missing");  // Go's ctx.Value(-1).
constexpr Key<int> kIntKey("int");

// Go keys its DeepValue chains by the ints 0..depth-1; reqctx keys compare by
// identity, so each layer gets its own Key object. Leaked: keys must outlive
// every context that uses them.
const Key<int>& DepthKey(int i) {
  static std::deque<Key<int>>* const keys = [] {
    auto* k = new std::deque<Key<int>>();
    for (int j = 0; j < 100; ++j) k->emplace_back("depth");
    return k;
  }();
  return (*keys)[i];
}

// --- CommonParentCancel ------------------------------------------------------
// Go: RunParallel; per op: WithCancel(shared), a Value lookup through it,
// 100 divisions, cancel(), 100 divisions.
void BM_CommonParentCancel(State& state) {
  // Built by thread 0; the others first read it after the barrier that
  // Google Benchmark runs at the loop's start (and one at its end).
  static Context shared;
  static CancelFunc shared_cancel;
  if (state.thread_index() == 0) {
    Context root = reqctx::WithValue(Background(), kStringKey, StringValue());
    std::tie(shared, shared_cancel) = reqctx::WithCancel(root);
  }
  int64_t x = 0;
  AllocCounter allocs;  // After the setup: counts only the loop.
  for (auto _ : state) {
    auto [ctx, cancel] = reqctx::WithCancel(shared);
    const std::string* v = ctx.Value(kStringKey);
    if (v == nullptr || *v != "value") state.SkipWithError("bad value");
    DivideLoop(x);
    cancel();
    DivideLoop(x);
  }
  allocs.Report(state);
  // Google Benchmark joins all threads at the loop's end; thread 0 cleans up.
  if (state.thread_index() == 0) {
    shared_cancel = CancelFunc();
    shared = Context();
  }
}

// stop_source has no values; otherwise the same: link a child to the shared
// parent, stop it, unlink it (the callback's destructor).
void BM_StopSource_CommonParentCancel(State& state) {
  static std::stop_source* shared = nullptr;
  if (state.thread_index() == 0) shared = new std::stop_source();
  int64_t x = 0;
  AllocCounter allocs;
  for (auto _ : state) {
    std::optional<StopLink> child;
    child.emplace(shared->get_token());
    DivideLoop(x);
    child->source.request_stop();
    child.reset();
    DivideLoop(x);
  }
  allocs.Report(state);
  if (state.thread_index() == 0) {
    delete shared;
    shared = nullptr;
  }
}

// --- WithTimeout/concurrency=N -------------------------------------------------
// Go: first N/GOMAXPROCS live 1-hour timeouts per P (untimed); then
// RunParallel, per op: 10 x WithTimeout(Background, 1h), then the 10 cancels.
void BM_WithTimeout(State& state, int64_t concurrency) {
  const int64_t per_thread = concurrency / state.threads();
  std::vector<CancelFunc> background;
  background.reserve(per_thread);
  for (int64_t i = 0; i < per_thread; ++i) {
    background.push_back(
        reqctx::WithTimeout(Background(), absl::Hours(1)).second);
  }
  std::array<CancelFunc, 10> wcf;
  AllocCounter allocs;
  for (auto _ : state) {
    for (CancelFunc& f : wcf) {
      // Reassigning drops the previous op's (already canceled) CancelFunc.
      f = reqctx::WithTimeout(Background(), absl::Hours(1)).second;
    }
    for (const CancelFunc& f : wcf) f();
  }
  allocs.Report(state);
  wcf = {};
  background.clear();  // Untimed, as Go's b.StopTimer() cleanup.
}

// --- CancelTree/depth=D/Root=... -----------------------------------------------
// Go: buildContextTree(root, d) is d nested WithCancel calls; the CancelFuncs
// are discarded. Here they are kept in a pre-sized vector and dropped
// leaf-first at the end of the op (see the file comment).
enum class Root { kBackground, kOpenCanceler, kClosedCanceler };

void BuildContextTree(Context root, int depth, std::vector<CancelFunc>& out) {
  for (int d = 0; d < depth; ++d) {
    auto [ctx, cancel] = reqctx::WithCancel(root);
    root = std::move(ctx);
    out.push_back(std::move(cancel));
  }
}

void DropLeafFirst(std::vector<CancelFunc>& cancels) {
  while (!cancels.empty()) cancels.pop_back();
}

void BM_CancelTree(State& state, int depth, Root root_kind) {
  std::vector<CancelFunc> cancels;
  cancels.reserve(depth);
  AllocCounter allocs;
  for (auto _ : state) {
    switch (root_kind) {
      case Root::kBackground:
        BuildContextTree(Background(), depth, cancels);
        break;
      case Root::kOpenCanceler: {
        auto [ctx, cancel] = reqctx::WithCancel(Background());
        BuildContextTree(ctx, depth, cancels);
        cancel();
        break;
      }
      case Root::kClosedCanceler: {
        auto [ctx, cancel] = reqctx::WithCancel(Background());
        cancel();
        BuildContextTree(ctx, depth, cancels);
        break;
      }
    }
    DropLeafFirst(cancels);
  }
  allocs.Report(state);
}

// A linked chain of depth d: each std::stop_source is stopped by a callback on
// its parent's token. Background is a default std::stop_token (no state: the
// callback is never registered). Storage is pre-sized; the stop states are
// allocated per op, as reqctx's nodes are. Unlinked leaf-first.
void BM_StopSource_CancelTree(State& state, int depth, Root root_kind) {
  std::vector<std::optional<StopLink>> links(depth);
  auto build = [&](std::stop_token parent) {
    for (int d = 0; d < depth; ++d) {
      links[d].emplace(parent);
      parent = links[d]->source.get_token();
    }
  };
  auto unlink = [&] {
    for (int d = depth - 1; d >= 0; --d) links[d].reset();
  };
  AllocCounter allocs;
  for (auto _ : state) {
    switch (root_kind) {
      case Root::kBackground:
        build(std::stop_token());
        unlink();
        break;
      case Root::kOpenCanceler: {
        std::stop_source root;
        build(root.get_token());
        root.request_stop();
        unlink();
        break;
      }
      case Root::kClosedCanceler: {
        std::stop_source root;
        root.request_stop();
        build(root.get_token());
        unlink();
        break;
      }
    }
  }
  allocs.Report(state);
}

// --- CheckCanceled/{Err,Done} ---------------------------------------------------
// Go: a canceled WithCancel(Background); per op ctx.Err(), or a non-blocking
// receive on ctx.Done().
void BM_CheckCanceled_Err(State& state) {
  auto [ctx, cancel] = reqctx::WithCancel(Background());
  cancel();
  AllocCounter allocs;
  for (auto _ : state) {
    // As Go's `err := ctx.Err()`: the error value itself, not a copy.
    const absl::Status& err = ctx.Err();
    benchmark::DoNotOptimize(&err);
  }
  allocs.Report(state);
}

void BM_CheckCanceled_Done(State& state) {
  auto [ctx, cancel] = reqctx::WithCancel(Background());
  cancel();
  AllocCounter allocs;
  for (auto _ : state) {
    bool done = ctx.Done().IsDone();
    benchmark::DoNotOptimize(done);
  }
  allocs.Report(state);
}

// reqctx-only: the DoneSignal taken once, outside the loop (a loop that polls
// for cancellation would do this): only the atomic read remains.
void BM_CheckCanceled_DoneHoisted(State& state) {
  auto [ctx, cancel] = reqctx::WithCancel(Background());
  cancel();
  reqctx::DoneSignal signal = ctx.Done();
  AllocCounter allocs;
  for (auto _ : state) {
    bool done = signal.IsDone();
    benchmark::DoNotOptimize(done);
  }
  allocs.Report(state);
}

// std: stop_requested() on a stopped token, for both Err and Done.
void BM_StopSource_CheckCanceled(State& state) {
  std::stop_source source;
  source.request_stop();
  std::stop_token token = source.get_token();
  AllocCounter allocs;
  for (auto _ : state) {
    bool done = token.stop_requested();
    benchmark::DoNotOptimize(done);
  }
  allocs.Report(state);
}

// --- ContextCancelDone --------------------------------------------------------
// Go: a live WithCancel(Background); RunParallel, per op a non-blocking
// receive on ctx.Done() from every P at once.
void BM_ContextCancelDone(State& state) {
  static Context* ctx = nullptr;
  static CancelFunc* cancel = nullptr;
  if (state.thread_index() == 0) {
    auto [c, f] = reqctx::WithCancel(Background());
    ctx = new Context(std::move(c));
    cancel = new CancelFunc(std::move(f));
  }
  AllocCounter allocs;
  for (auto _ : state) {
    bool done = ctx->Done().IsDone();
    benchmark::DoNotOptimize(done);
  }
  allocs.Report(state);
  if (state.thread_index() == 0) {
    delete cancel;
    delete ctx;
  }
}

void BM_StopSource_ContextCancelDone(State& state) {
  static std::stop_source* source = nullptr;
  if (state.thread_index() == 0) source = new std::stop_source();
  AllocCounter allocs;
  for (auto _ : state) {
    bool done = source->stop_requested();
    benchmark::DoNotOptimize(done);
  }
  allocs.Report(state);
  if (state.thread_index() == 0) {
    delete source;
    source = nullptr;
  }
}

// --- DeepValue{Same,New}GoRoutine/depth=D --------------------------------------
// Go: a chain of D WithValue layers; per op a lookup of an absent key (walks
// the whole chain), on this goroutine or on a new one that is waited for.
Context DeepValueChain(int depth) {
  Context ctx = Background();
  for (int i = 0; i < depth; ++i) {
    ctx = reqctx::WithValue(ctx, DepthKey(i), i);
  }
  return ctx;
}

void BM_DeepValueSameGoRoutine(State& state, int depth) {
  Context ctx = DeepValueChain(depth);
  AllocCounter allocs;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ctx.Value(kMissingKey));
  }
  allocs.Report(state);
}

void BM_DeepValueNewGoRoutine(State& state, int depth) {
  Context ctx = DeepValueChain(depth);
  AllocCounter allocs;
  for (auto _ : state) {
    std::thread t([&ctx] { benchmark::DoNotOptimize(ctx.Value(kMissingKey)); });
    t.join();
  }
  allocs.Report(state);
}

// --- reqctx-only cases for the targets ---------------------------------
// Cancel of a child linked to a cancelable parent: create, cancel, drop. Its
// bytes_per_op is the allocation of one WithCancel child of a cancelable
// parent.
void BM_LinkedChildCancel(State& state) {
  auto [parent, parent_cancel] = reqctx::WithCancel(Background());
  AllocCounter allocs;
  for (auto _ : state) {
    auto [ctx, cancel] = reqctx::WithCancel(parent);
    cancel();
  }
  allocs.Report(state);
}

void BM_StopSource_LinkedChildCancel(State& state) {
  std::stop_source parent;
  std::stop_token token = parent.get_token();
  AllocCounter allocs;
  for (auto _ : state) {
    StopLink child(token);
    child.source.request_stop();
  }
  allocs.Report(state);
}

// One WithTimeout (1 hour, never fires) and its cancel: bytes per WithTimeout.
void BM_WithTimeoutCancel(State& state) {
  AllocCounter allocs;
  for (auto _ : state) {
    auto [ctx, cancel] = reqctx::WithTimeout(Background(), absl::Hours(1));
    cancel();
  }
  allocs.Report(state);
}

// One WithValue layer (an int) made and dropped: bytes per WithValue.
void BM_WithValue(State& state) {
  auto [parent, parent_cancel] = reqctx::WithCancel(Background());
  AllocCounter allocs;
  for (auto _ : state) {
    Context ctx = reqctx::WithValue(parent, kIntKey, 42);
    benchmark::DoNotOptimize(ctx);
  }
  allocs.Report(state);
}

// --- Registration -----------------------------------------------------------------
// Names are Go's benchmark names (without Go's -GOMAXPROCS suffix), so that
// run_all.sh joins the two outputs by name. Google Benchmark appends
// "/real_time" and "/threads:N"; the join strips them.
template <typename Fn>
benchmark::internal::Benchmark* Register(const std::string& name, Fn&& fn) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn));
}

// Each case in both flavors: reqctx under `name`, std under "StopSource/name".
void RegisterAll() {
  Register("BenchmarkCommonParentCancel", BM_CommonParentCancel)
      ->ThreadPerCpu()
      ->UseRealTime();
  Register("StopSource/BenchmarkCommonParentCancel",
           BM_StopSource_CommonParentCancel)
      ->ThreadPerCpu()
      ->UseRealTime();

  for (int64_t concurrency : {40, 4000, 400000}) {
    Register("BenchmarkWithTimeout/concurrency=" + std::to_string(concurrency),
             [concurrency](State& s) { BM_WithTimeout(s, concurrency); })
        ->ThreadPerCpu()
        ->UseRealTime();
  }

  const std::pair<const char*, Root> roots[] = {
      {"Background", Root::kBackground},
      {"OpenCanceler", Root::kOpenCanceler},
      {"ClosedCanceler", Root::kClosedCanceler}};
  for (int depth : {1, 10, 100, 1000}) {
    for (const auto& [root_name, root] : roots) {
      const std::string name = "BenchmarkCancelTree/depth=" +
                               std::to_string(depth) + "/Root=" + root_name;
      Register(name, [depth, root = root](State& s) {
        BM_CancelTree(s, depth, root);
      });
      Register("StopSource/" + name, [depth, root = root](State& s) {
        BM_StopSource_CancelTree(s, depth, root);
      });
    }
  }

  Register("BenchmarkCheckCanceled/Err", BM_CheckCanceled_Err);
  Register("StopSource/BenchmarkCheckCanceled/Err",
           BM_StopSource_CheckCanceled);
  Register("BenchmarkCheckCanceled/Done", BM_CheckCanceled_Done);
  Register("StopSource/BenchmarkCheckCanceled/Done",
           BM_StopSource_CheckCanceled);
  Register("BenchmarkCheckCanceled/DoneHoisted", BM_CheckCanceled_DoneHoisted);

  Register("BenchmarkContextCancelDone", BM_ContextCancelDone)
      ->ThreadPerCpu()
      ->UseRealTime();
  Register("StopSource/BenchmarkContextCancelDone",
           BM_StopSource_ContextCancelDone)
      ->ThreadPerCpu()
      ->UseRealTime();

  for (int depth : {10, 20, 30, 50, 100}) {
    const std::string d = "/depth=" + std::to_string(depth);
    Register("BenchmarkDeepValueNewGoRoutine" + d,
             [depth](State& s) { BM_DeepValueNewGoRoutine(s, depth); })
        ->UseRealTime();  // The work is on another thread.
    Register("BenchmarkDeepValueSameGoRoutine" + d,
             [depth](State& s) { BM_DeepValueSameGoRoutine(s, depth); });
  }

  Register("BenchmarkLinkedChildCancel", BM_LinkedChildCancel);
  Register("StopSource/BenchmarkLinkedChildCancel",
           BM_StopSource_LinkedChildCancel);
  Register("BenchmarkWithTimeoutCancel", BM_WithTimeoutCancel);
  Register("BenchmarkWithValue", BM_WithValue);
}

// Registers before benchmark_main's main() runs.
const bool kRegistered = (RegisterAll(), true);

}  // namespace
