#include "limits/limit_options.h"

#include <string>
#include "limits/fixed_limit.h"

namespace reqctx::limits {

std::string_view AlgorithmName(Algorithm a) {
  switch (a) {
    case Algorithm::kFixed:
      return "fixed";
    case Algorithm::kAimd:
      return "aimd";
    case Algorithm::kGradient:
      return "gradient";
    case Algorithm::kVegas:
      return "vegas";
  }
  return "unknown";
}

std::optional<Algorithm> ParseAlgorithm(std::string_view name) {
  for (Algorithm a : {Algorithm::kFixed, Algorithm::kAimd,
                      Algorithm::kGradient, Algorithm::kVegas}) {
    if (name == AlgorithmName(a)) return a;
  }
  return std::nullopt;
}

LimitBounds LimitOptions::Bounds() const {
  switch (algorithm) {
    case Algorithm::kAimd:
      return aimd.bounds;
    case Algorithm::kGradient:
      return gradient.bounds;
    case Algorithm::kVegas:
      return vegas.bounds;
    case Algorithm::kFixed:
      break;
  }
  LimitBounds b;
  b.initial = b.min = b.max = fixed;
  b.warmup_samples = 0;
  return b;
}

absl::Status ValidateLimitOptions(const LimitOptions& o,
                                  std::string_view prefix) {
  absl::Status s;
  switch (o.algorithm) {
    case Algorithm::kFixed:
      if (o.fixed < 1) {
        return BadOption(prefix, "fixed", "must be >= 1");
      }
      return absl::OkStatus();
    case Algorithm::kAimd:
      s = o.aimd.Validate(std::string(prefix) + ".aimd");
      break;
    case Algorithm::kGradient:
      s = o.gradient.Validate(std::string(prefix) + ".gradient");
      break;
    case Algorithm::kVegas:
      s = o.vegas.Validate(std::string(prefix) + ".vegas");
      break;
    default:
      return BadOption(prefix, "algorithm", "unknown value");
  }
  if (!s.ok()) return s;
  return o.window.Validate(std::string(prefix) + ".window");
}

absl::StatusOr<std::unique_ptr<Limit>> MakeLimit(const LimitOptions& o) {
  if (absl::Status s = ValidateLimitOptions(o); !s.ok()) return s;
  std::unique_ptr<Limit> inner;
  switch (o.algorithm) {
    case Algorithm::kFixed:
      return std::make_unique<FixedLimit>(o.fixed);
    case Algorithm::kAimd:
      inner = std::make_unique<AimdLimit>(o.aimd);
      break;
    case Algorithm::kGradient:
      inner = std::make_unique<Gradient2Limit>(o.gradient);
      break;
    case Algorithm::kVegas:
      inner = std::make_unique<VegasLimit>(o.vegas);
      break;
  }
  return std::make_unique<WindowedLimit>(std::move(inner), o.window);
}

}  // namespace reqctx::limits
