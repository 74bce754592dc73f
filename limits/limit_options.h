// LimitOptions: which limit algorithm an enforcer runs, with its
// parameters, validated once and built into a Limit (issue 23).
//
//   reqctx::limits::LimitOptions o;
//   o.algorithm = reqctx::limits::Algorithm::kGradient;
//   o.gradient.bounds = {.initial = 20, .min = 4, .max = 500};
//   absl::StatusOr<std::unique_ptr<reqctx::limits::Limit>> limit =
//       reqctx::limits::MakeLimit(o);
//
// Adaptive algorithms are wrapped in a WindowedLimit (`window`); the fixed
// one is not (it has nothing to learn).
//
// Thread-safety: plain values and pure functions. Lifetime: MakeLimit's
// result is owned by the caller.
#ifndef REQCTX_LIMITS_LIMIT_OPTIONS_H_
#define REQCTX_LIMITS_LIMIT_OPTIONS_H_

#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "limits/aimd_limit.h"
#include "limits/gradient2_limit.h"
#include "limits/limit.h"
#include "limits/vegas_limit.h"
#include "limits/windowed_limit.h"

namespace reqctx::limits {

enum class Algorithm { kFixed, kAimd, kGradient, kVegas };

// "fixed", "aimd", "gradient", "vegas".
std::string_view AlgorithmName(Algorithm a);
// The inverse of AlgorithmName; nullopt for any other text.
std::optional<Algorithm> ParseAlgorithm(std::string_view name);

struct LimitOptions {
  Algorithm algorithm = Algorithm::kFixed;
  int fixed = 1;  // kFixed's limit; >= 1
  AimdOptions aimd;
  Gradient2Options gradient;
  VegasOptions vegas;
  WindowOptions window;  // for the adaptive algorithms

  // The bounds of the chosen algorithm (for kFixed: all `fixed`).
  LimitBounds Bounds() const;
};

// InvalidArgument naming the field, prefixed by `prefix` (e.g.
// "limit.gradient.smoothing: must be in (0, 1]"). Only the chosen
// algorithm's options (and `window` for an adaptive one) are checked.
absl::Status ValidateLimitOptions(const LimitOptions& o,
                                  std::string_view prefix = "limit");

// A new limit for `o`, or ValidateLimitOptions' error.
absl::StatusOr<std::unique_ptr<Limit>> MakeLimit(const LimitOptions& o);

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_LIMIT_OPTIONS_H_
