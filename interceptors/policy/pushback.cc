#include "interceptors/policy/pushback.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace reqctx::policy {

Pushback ParsePushback(std::optional<std::string_view> value) {
  if (!value.has_value()) return Pushback::None();
  const std::string_view v = *value;
  int32_t ms = -1;
  // from_chars: an optional leading '-' then digits only, the whole value,
  // within int32_t (out of range is an error, not a clamp).
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), ms);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || ms < 0) {
    return Pushback::Stop();
  }
  return Pushback::RetryAfter(absl::Milliseconds(ms));
}

std::string FormatPushback(absl::Duration delay) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  const int64_t ms =
      absl::ToInt64Milliseconds(absl::Ceil(delay, absl::Milliseconds(1)));
  return absl::StrCat(std::clamp<int64_t>(ms, 1, kMax));
}

}  // namespace reqctx::policy
