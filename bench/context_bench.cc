// //bench:context_bench -- reqctx's Context against Go's context and
// std::stop_source, case for case.
//
// Each "Benchmark..." case mirrors the Go benchmark of the same name in Go's
// src/context/benchmark_test.go (Go 1.19), with the same work per iteration,
// so that bench/go/benchreport (run by bench/run_all.sh) can join the two
// outputs by name. Cases named "StopSource/<Go name>" do the nearest
// std::stop_source equivalent of that case. A few reqctx-only cases (no Go
// counterpart) measure the targets directly: LinkedChildCancel,
// WithTimeoutCancel, WithValue and CheckCanceled/DoneHoisted. Two parallel
// cases that Go's file lacks have their Go side in
// bench/go/server_shaped_test.go: CheckCanceledParallel/{Err,Done} (every
// thread checks one canceled context) and ServerShaped (every thread derives
// request contexts from one shared parent and polls them while it works).
//
// Mapping of Go's benchmark mechanics:
//   * b.N loop                -> `for (auto _ : state)`.
//   * b.RunParallel(...)      -> ->Threads(n)->UseManualTime() for each n of
//     --threads (default 1,2,4,8,16 and this machine's CPU count), as Go runs
//     GOMAXPROCS goroutines under `go test -cpu n`. ns/op is RunParallel's:
//     wall time / iterations summed over all threads, the wall time measured
//     by ParallelWallTime (below). Per-goroutine setup inside the closure
//     (e.g. `wcf := make(...)`) becomes per-thread setup before the loop.
//   * a goroutine per op      -> a std::thread per op (DeepValueNewGoRoutine).
//   * `ctx, _ := WithCancel()` -> reqctx cancels a context when its last
//     CancelFunc is dropped (Go leaves it to the GC, uncanceled). To do the
//     same work as Go's loop body, the CancelFuncs are kept until the end of
//     the iteration; dropping them (a cancel of each node) is part of the
//     measured cost, since a C++ caller cannot avoid it.
//   * Go's B/op, allocs/op    -> counters bytes_per_op and allocs_per_op, from
//     the operator new replaced below (requested bytes, not size classes).
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <new>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "context/core.h"

ABSL_FLAG(std::vector<std::string>, threads,
          std::vector<std::string>({"1", "2", "4", "8", "16"}),
          "Thread counts at which each parallel case runs (Go's RunParallel "
          "cases, CheckCanceledParallel, ServerShaped), like go test -cpu; "
          "this machine's CPU count is always added.");

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

// Go's `for i := 0; i < 100; i++ { x /= x + 1 }`: a dependent chain of `n`
// (Go: 100) 64-bit divisions (Go's int is 64 bits). x is laundered through
// DoNotOptimize so the compiler cannot fold the chain (x starts at 0).
inline void DivideLoop(int64_t& x, int n = 100) {
  benchmark::DoNotOptimize(x);
  for (int i = 0; i < n; ++i) x /= x + 1;
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

// --- State shared by the threads of a parallel case ----------------------------
// Thread 0 builds a T before the loop and destroys it after. The other threads
// first touch it inside the loop, after the barrier Google Benchmark runs at
// the loop's start, and last touch it before the barrier at the loop's end, so
// no thread sees it half-built or gone. Use it only inside the loop.
template <typename T>
class Shared {
 public:
  explicit Shared(const State& state) : owner_(state.thread_index() == 0) {
    if (owner_) Slot() = new T();
  }
  ~Shared() {
    if (owner_) {
      delete Slot();
      Slot() = nullptr;
    }
  }
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;

  T* operator->() const { return Slot(); }

 private:
  static T*& Slot() {
    static T* value = nullptr;
    return value;
  }
  const bool owner_;
};

// The wall time of a parallel case, as Go's RunParallel measures it: from the
// moment every thread is running (the last one reached the barrier at the
// loop's start) to the loop's end (the barrier after the last thread's last
// iteration), reported as the run's manual time (registered with
// UseManualTime). Google Benchmark's UseRealTime instead averages the threads'
// own timers, each started when that thread got a CPU after the barrier, which
// leaves out the time threads wait for a CPU when there are more threads than
// CPUs and so reports too little. The start is the latest time a thread
// recorded before the start barrier, the end the earliest a thread recorded
// after the end barrier, so a thread that is slow to wake up after a barrier
// does not add its delay. Construct it right before the loop and call
// Report() right after, on every thread; nothing is done per iteration.
class ParallelWallTime {
 public:
  explicit ParallelWallTime(State& state) : state_(state) {
    const int64_t now = NowNs();
    int64_t seen = LastStart().load(std::memory_order_relaxed);
    while (seen < now && !LastStart().compare_exchange_weak(
                             seen, now, std::memory_order_relaxed)) {
    }
  }
  ParallelWallTime(const ParallelWallTime&) = delete;
  ParallelWallTime& operator=(const ParallelWallTime&) = delete;

  // After the loop. The last thread to get here reports the run's wall time
  // (the runner divides the threads' summed manual time by their number) and
  // resets the shared records for the next run, whose threads start after
  // this run's have been joined. Every start was recorded before the start
  // barrier; every end before the release increment on Reported(), which the
  // last thread's increment acquires.
  void Report() {
    const int64_t now = NowNs();
    int64_t seen = FirstEnd().load(std::memory_order_relaxed);
    while (seen > now && !FirstEnd().compare_exchange_weak(
                             seen, now, std::memory_order_relaxed)) {
    }
    if (Reported().fetch_add(1, std::memory_order_acq_rel) + 1 !=
        state_.threads()) {
      return;
    }
    const int64_t start = LastStart().exchange(0, std::memory_order_relaxed);
    const int64_t end =
        FirstEnd().exchange(kNoEnd, std::memory_order_relaxed);
    Reported().store(0, std::memory_order_relaxed);
    state_.SetIterationTime(static_cast<double>(end - start) * 1e-9 *
                            state_.threads());
  }

 private:
  static constexpr int64_t kNoEnd = INT64_MAX;
  static int64_t NowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  static std::atomic<int64_t>& LastStart() {
    static std::atomic<int64_t> last{0};
    return last;
  }
  static std::atomic<int64_t>& FirstEnd() {
    static std::atomic<int64_t> first{kNoEnd};
    return first;
  }
  static std::atomic<int>& Reported() {
    static std::atomic<int> reported{0};
    return reported;
  }
  State& state_;
};

// A live cancelable context (a server-lifetime context) and its CancelFunc.
struct LiveContext {
  LiveContext() { std::tie(ctx, cancel) = reqctx::WithCancel(Background()); }
  Context ctx;
  CancelFunc cancel;
};

// A canceled context.
struct CanceledContext {
  Context ctx = [] {
    auto [c, cancel] = reqctx::WithCancel(Background());
    cancel();
    return c;
  }();
};

// Go's CommonParentCancel root: WithCancel(WithValue(Background, "key",
// "value")).
struct ValueParent {
  ValueParent() {
    Context root = reqctx::WithValue(Background(), kStringKey, StringValue());
    std::tie(ctx, cancel) = reqctx::WithCancel(root);
  }
  Context ctx;
  CancelFunc cancel;
};

// A std::stop_source whose stop was requested.
struct StoppedSource {
  StoppedSource() { source.request_stop(); }
  std::stop_source source;
};

// --- CommonParentCancel ------------------------------------------------------
// Go: RunParallel; per op: WithCancel(shared), a Value lookup through it,
// 100 divisions, cancel(), 100 divisions.
void BM_CommonParentCancel(State& state) {
  Shared<ValueParent> shared(state);
  int64_t x = 0;
  AllocCounter allocs;  // After the setup: counts only the loop.
  ParallelWallTime wall(state);
  for (auto _ : state) {
    auto [ctx, cancel] = reqctx::WithCancel(shared->ctx);
    const std::string* v = ctx.Value(kStringKey);
    if (v == nullptr || *v != "value") state.SkipWithError("bad value");
    DivideLoop(x);
    cancel();
    DivideLoop(x);
  }
  wall.Report();
  allocs.Report(state);
}

// The same loop with only the benchmark's own work (the 200 divisions), on
// both sides (Go peer: bench/go): CommonParentCancel minus this is what the
// context operations cost, which the division chain otherwise dominates.
void BM_CommonParentCancelWorkOnly(State& state) {
  int64_t x = 0;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    DivideLoop(x);
    DivideLoop(x);
  }
  wall.Report();
}

// stop_source has no values; otherwise the same: link a child to the shared
// parent, stop it, unlink it (the callback's destructor).
void BM_StopSource_CommonParentCancel(State& state) {
  Shared<std::stop_source> shared(state);
  int64_t x = 0;
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    std::optional<StopLink> child;
    child.emplace(shared->get_token());
    DivideLoop(x);
    child->source.request_stop();
    child.reset();
    DivideLoop(x);
  }
  wall.Report();
  allocs.Report(state);
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
  ParallelWallTime wall(state);
  for (auto _ : state) {
    for (CancelFunc& f : wcf) {
      // Reassigning drops the previous op's (already canceled) CancelFunc.
      f = reqctx::WithTimeout(Background(), absl::Hours(1)).second;
    }
    for (const CancelFunc& f : wcf) f();
  }
  wall.Report();
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
  Shared<LiveContext> shared(state);
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    bool done = shared->ctx.Done().IsDone();
    benchmark::DoNotOptimize(done);
  }
  wall.Report();
  allocs.Report(state);
}

void BM_StopSource_ContextCancelDone(State& state) {
  Shared<std::stop_source> shared(state);
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    bool done = shared->stop_requested();
    benchmark::DoNotOptimize(done);
  }
  wall.Report();
  allocs.Report(state);
}

// --- CheckCanceledParallel/{Err,Done} (Go peer: bench/go) ------------------------
// CheckCanceled with every thread checking one shared canceled context at once
// (a server whose threads all see the server context end).
void BM_CheckCanceledParallel_Err(State& state) {
  Shared<CanceledContext> shared(state);
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    const absl::Status& err = shared->ctx.Err();
    benchmark::DoNotOptimize(&err);
  }
  wall.Report();
  allocs.Report(state);
}

void BM_CheckCanceledParallel_Done(State& state) {
  Shared<CanceledContext> shared(state);
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    bool done = shared->ctx.Done().IsDone();
    benchmark::DoNotOptimize(done);
  }
  wall.Report();
  allocs.Report(state);
}

void BM_StopSource_CheckCanceledParallel(State& state) {
  Shared<StoppedSource> shared(state);
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    bool done = shared->source.stop_requested();
    benchmark::DoNotOptimize(done);
  }
  wall.Report();
  allocs.Report(state);
}

// --- ServerShaped (Go peer: bench/go) ---------------------------------------------
// A server: one live server-lifetime context; every thread serves requests,
// each a WithTimeout child of it (kRequestTimeout, never reached) that the
// handler polls before each of kPollsPerRequest slices of work
// (kDivisionsPerSlice divisions each), then cancels as it returns.
constexpr int kPollsPerRequest = 10;
constexpr int kDivisionsPerSlice = 10;
constexpr absl::Duration kRequestTimeout = absl::Seconds(10);

void BM_ServerShaped(State& state) {
  Shared<LiveContext> server(state);
  int64_t x = 0;
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    auto [ctx, cancel] = reqctx::WithTimeout(server->ctx, kRequestTimeout);
    for (int i = 0; i < kPollsPerRequest; ++i) {
      if (ctx.Done().IsDone()) {
        state.SkipWithError("request context done early");
        break;
      }
      DivideLoop(x, kDivisionsPerSlice);
    }
    cancel();
  }
  wall.Report();
  allocs.Report(state);
}

// std::stop_source has no timers: the request is only linked to the server's
// source (a callback on its token), polled, stopped and unlinked -- the cost
// of the link alone, a lower bound for WithTimeout's.
void BM_StopSource_ServerShaped(State& state) {
  Shared<std::stop_source> server(state);
  int64_t x = 0;
  AllocCounter allocs;
  ParallelWallTime wall(state);
  for (auto _ : state) {
    StopLink request(server->get_token());
    for (int i = 0; i < kPollsPerRequest; ++i) {
      if (request.source.stop_requested()) {
        state.SkipWithError("request stopped early");
        break;
      }
      DivideLoop(x, kDivisionsPerSlice);
    }
    request.source.request_stop();
  }
  wall.Report();
  allocs.Report(state);
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
// bench/go/benchreport joins the two outputs by name. Google Benchmark appends
// "/real_time" and "/threads:N"; the join strips them and reads the thread
// count from the JSON.
template <typename Fn>
benchmark::internal::Benchmark* Register(const std::string& name, Fn&& fn) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn));
}

// A RunParallel case: one run per thread count, ns/op = wall time / all ops
// (the case measures its wall time with ParallelWallTime).
template <typename Fn>
void RegisterParallel(const std::string& name, Fn&& fn,
                      const std::vector<int>& threads) {
  benchmark::internal::Benchmark* b =
      Register(name, std::forward<Fn>(fn))->UseManualTime();
  for (int n : threads) b->Threads(n);
}

// Each case in both flavors: reqctx under `name`, std under "StopSource/name".
void RegisterAll(const std::vector<int>& threads) {
  RegisterParallel("BenchmarkCommonParentCancel", BM_CommonParentCancel,
                   threads);
  RegisterParallel("StopSource/BenchmarkCommonParentCancel",
                   BM_StopSource_CommonParentCancel, threads);
  RegisterParallel("BenchmarkCommonParentCancelWorkOnly",
                   BM_CommonParentCancelWorkOnly, threads);

  for (int64_t concurrency : {40, 4000, 400000}) {
    RegisterParallel(
        "BenchmarkWithTimeout/concurrency=" + std::to_string(concurrency),
        [concurrency](State& s) { BM_WithTimeout(s, concurrency); }, threads);
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

  RegisterParallel("BenchmarkContextCancelDone", BM_ContextCancelDone,
                   threads);
  RegisterParallel("StopSource/BenchmarkContextCancelDone",
                   BM_StopSource_ContextCancelDone, threads);

  RegisterParallel("BenchmarkCheckCanceledParallel/Err",
                   BM_CheckCanceledParallel_Err, threads);
  RegisterParallel("StopSource/BenchmarkCheckCanceledParallel/Err",
                   BM_StopSource_CheckCanceledParallel, threads);
  RegisterParallel("BenchmarkCheckCanceledParallel/Done",
                   BM_CheckCanceledParallel_Done, threads);
  RegisterParallel("StopSource/BenchmarkCheckCanceledParallel/Done",
                   BM_StopSource_CheckCanceledParallel, threads);

  RegisterParallel("BenchmarkServerShaped", BM_ServerShaped, threads);
  RegisterParallel("StopSource/BenchmarkServerShaped",
                   BM_StopSource_ServerShaped, threads);

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

// Parses --threads: positive counts up to kMaxThreads, plus this machine's
// CPU count (the main table's column), sorted and deduplicated. Returns false
// with a message on stderr for anything else.
constexpr int kMaxThreads = 1024;

bool ParseThreads(const std::vector<std::string>& flag, std::vector<int>& out) {
  out.clear();
  for (const std::string& s : flag) {
    int n = 0;
    if (!absl::SimpleAtoi(s, &n) || n < 1 || n > kMaxThreads) {
      std::fprintf(stderr,
                   "context_bench: --threads: \"%s\" is not a thread count "
                   "(1..%d)\n",
                   s.c_str(), kMaxThreads);
      return false;
    }
    out.push_back(n);
  }
  const int cpus = static_cast<int>(std::thread::hardware_concurrency());
  if (cpus > 0) out.push_back(std::min(cpus, kMaxThreads));
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return true;
}

}  // namespace

// Google Benchmark takes its --benchmark_* flags out of argv first; what is
// left is parsed as absl flags (--threads), so an unknown flag is an error.
int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  absl::ParseCommandLine(argc, argv);
  std::vector<int> threads;
  if (!ParseThreads(absl::GetFlag(FLAGS_threads), threads)) return 2;
  RegisterAll(threads);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
