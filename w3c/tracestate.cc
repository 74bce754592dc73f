// W3C tracestate validation and trimming (see tracestate.h).
#include "w3c/tracestate.h"

#include <array>

namespace reqctx {
namespace {

bool IsOws(char c) { return c == ' ' || c == '\t'; }

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

bool IsLcAlpha(char c) { return c >= 'a' && c <= 'z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
// The characters after a key's (or part's) first one.
bool IsKeyChar(char c) {
  return IsLcAlpha(c) || IsDigit(c) || c == '_' || c == '-' || c == '*' ||
         c == '/';
}

// `first` is checked by `first_ok`, the rest by IsKeyChar; 1..max_size long.
template <typename FirstOk>
bool IsKeyPart(std::string_view s, size_t max_size, FirstOk first_ok) {
  if (s.empty() || s.size() > max_size || !first_ok(s.front())) return false;
  for (size_t i = 1; i < s.size(); ++i) {
    if (!IsKeyChar(s[i])) return false;
  }
  return true;
}

bool IsNblkChr(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x21 && u <= 0x7e && c != ',' && c != '=';
}

}  // namespace

bool IsValidTracestateKey(std::string_view key) {
  const size_t at = key.find('@');
  if (at == std::string_view::npos) {
    return IsKeyPart(key, 256, IsLcAlpha);
  }
  return IsKeyPart(key.substr(0, at), 241,
                   [](char c) { return IsLcAlpha(c) || IsDigit(c); }) &&
         IsKeyPart(key.substr(at + 1), 14, IsLcAlpha);
}

bool IsValidTracestateValue(std::string_view value) {
  if (value.empty() || value.size() > 256 || !IsNblkChr(value.back())) {
    return false;
  }
  for (char c : value) {
    if (c != ' ' && !IsNblkChr(c)) return false;
  }
  return true;
}

SanitizedTracestate SanitizeTracestate(std::string_view header,
                                       size_t max_bytes) {
  SanitizedTracestate out;
  // The kept members (at most 32) and their keys, without a heap
  // allocation (this runs on every incoming call that has a tracestate).
  std::array<std::string_view, kMaxTracestateMembers> members;
  std::array<std::string_view, kMaxTracestateMembers> keys;
  size_t n = 0;
  while (!header.empty()) {
    const size_t comma = header.find(',');
    const std::string_view m = TrimOws(header.substr(0, comma));
    header.remove_prefix(comma == std::string_view::npos ? header.size()
                                                         : comma + 1);
    if (m.empty()) continue;
    const size_t eq = m.find('=');
    if (eq == std::string_view::npos ||
        !IsValidTracestateKey(m.substr(0, eq)) ||
        !IsValidTracestateValue(m.substr(eq + 1))) {
      ++out.invalid;
      continue;
    }
    const std::string_view key = m.substr(0, eq);
    bool repeated = false;
    for (size_t i = 0; i < n; ++i) repeated |= keys[i] == key;
    if (repeated) {
      ++out.invalid;
      continue;
    }
    if (n == kMaxTracestateMembers) {
      ++out.over_limit;
      continue;
    }
    keys[n] = key;
    members[n++] = m;
  }
  // The joined size: the members plus a comma between each two.
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) bytes += members[i].size() + 1;
  if (bytes > 0) --bytes;
  // W3C: over the limit, drop long members first, then from the right.
  auto drop = [&](size_t i) {
    bytes -= members[i].size() + (n > 1 ? 1 : 0);
    for (size_t j = i + 1; j < n; ++j) members[j - 1] = members[j];
    --n;
    ++out.over_limit;
  };
  for (size_t i = n; i > 0 && bytes > max_bytes; --i) {
    if (members[i - 1].size() > kTracestateLongMember) drop(i - 1);
  }
  while (n > 0 && bytes > max_bytes) drop(n - 1);
  out.value.reserve(bytes);
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out.value.push_back(',');
    out.value.append(members[i]);
  }
  return out;
}

}  // namespace reqctx
