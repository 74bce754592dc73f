#include "limits/limit.h"

#include <algorithm>

#include <string>

namespace reqctx::limits {

absl::Status BadOption(std::string_view prefix, std::string_view field,
                       std::string_view why) {
  std::string text(prefix);
  text.append(".").append(field).append(": ").append(why);
  return absl::InvalidArgumentError(text);
}

absl::Status LimitBounds::Validate(std::string_view prefix) const {
  auto bad = [&](std::string_view field, std::string_view why) {
    return BadOption(prefix, field, why);
  };
  if (min < 1) return bad("min", "must be >= 1");
  if (max < min) return bad("max", "must be >= min");
  if (initial < min || initial > max) {
    return bad("initial", "must be in [min, max]");
  }
  if (warmup_samples < 0) return bad("warmup_samples", "must be >= 0");
  return absl::OkStatus();
}

double QueueShare(absl::Duration budget, absl::Duration baseline) {
  if (budget == absl::InfiniteDuration() || baseline <= absl::ZeroDuration()) {
    return 1;
  }
  return std::clamp(absl::FDivDuration(budget - baseline, baseline),
                    kMinQueueShare, 1.0);
}

double LimitBounds::Clamp(double v) const {
  return std::clamp(v, static_cast<double>(min), static_cast<double>(max));
}

}  // namespace reqctx::limits
