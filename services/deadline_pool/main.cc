// deadline_pool: the smallest useful reqctx program.
//
// A request arrives with a 300 ms budget. It fans out to a pool of workers,
// each processing items of simulated work. Every worker takes the request's
// Context as its first parameter, checks it between items and sleeps with
// SleepFor so that it stops the moment the deadline passes. The first worker
// error (here: none) or the deadline cancels the rest, and the pool reports
// how far each worker got. A trace id rides along as a request-scoped value.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"

ABSL_FLAG(int, workers, 4, "number of workers");
ABSL_FLAG(int, items, 10, "items each worker processes");
ABSL_FLAG(absl::Duration, item_cost, absl::Milliseconds(50),
          "simulated work per item");
ABSL_FLAG(absl::Duration, budget, absl::Milliseconds(300),
          "the request's deadline");

namespace {

inline constexpr reqctx::Key<std::string> kTraceIdKey("trace_id");

// One worker: a Context first, then its own parameters.
absl::Status ProcessItems(const reqctx::Context& ctx, int worker, int items,
                          absl::Duration item_cost) {
  const std::string* trace = ctx.Value(kTraceIdKey);
  for (int i = 0; i < items; ++i) {
    if (absl::Status s = reqctx::SleepFor(ctx, item_cost); !s.ok()) {
      absl::PrintF("  worker %d [trace %s] stopped after %d/%d items: %s\n",
                   worker, trace ? *trace : "-", i, items, s.ToString());
      return s;
    }
  }
  absl::PrintF("  worker %d [trace %s] finished %d items\n", worker,
               trace ? *trace : "-", items);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int workers = absl::GetFlag(FLAGS_workers);
  const int items = absl::GetFlag(FLAGS_items);
  const absl::Duration item_cost = absl::GetFlag(FLAGS_item_cost);
  const absl::Duration budget = absl::GetFlag(FLAGS_budget);

  // The request: a deadline and a trace id, derived from Background.
  auto [ctx, cancel] = reqctx::WithTimeout(reqctx::Background(), budget);
  reqctx::Context request =
      reqctx::WithValue(ctx, kTraceIdKey, std::string("4bf92f3577b34da6"));
  absl::PrintF("request %s\n", request.DebugString());
  absl::PrintF("%d workers x %d items x %s each, budget %s\n", workers, items,
               absl::FormatDuration(item_cost), absl::FormatDuration(budget));

  const absl::Time start = absl::Now();
  reqctx::Group pool(request);
  for (int w = 0; w < workers; ++w) {
    pool.Go([w, items, item_cost](const reqctx::Context& task_ctx) {
      return ProcessItems(task_ctx, w, items, item_cost);
    });
  }
  absl::Status result = pool.Wait();
  absl::PrintF("pool returned %s after %s (request err: %s)\n",
               result.ToString(), absl::FormatDuration(absl::Now() - start),
               request.Err().ToString());
  return 0;
}
