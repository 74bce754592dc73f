#include "w3c/header_rules.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>

namespace reqctx {
namespace {

std::array<std::atomic<uint64_t>, kDroppedHeaderKinds * kDropReasons>
    g_dropped{};

// The bytes IsLegalGrpcHeaderKey accepts: a-z, 0-9, '-', '_', '.'.
constexpr std::array<bool, 256> kLegalKeyByte = [] {
  std::array<bool, 256> legal{};
  for (int c = 'a'; c <= 'z'; ++c) legal[c] = true;
  for (int c = '0'; c <= '9'; ++c) legal[c] = true;
  legal['-'] = legal['_'] = legal['.'] = true;
  return legal;
}();

size_t Slot(DroppedHeader header, DropReason reason) {
  return static_cast<size_t>(header) * kDropReasons +
         static_cast<size_t>(reason);
}

}  // namespace

bool IsLegalGrpcHeaderKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    if (!kLegalKeyByte[static_cast<unsigned char>(c)]) return false;
  }
  return true;
}

bool IsLegalGrpcHeaderValue(std::string_view value) {
  // Eight bytes at a time (every outbound call checks its traceparent):
  // a word holds an illegal byte iff one byte is < 0x20 or > 0x7e, tested
  // for all eight at once with the borrow/carry of one subtraction and one
  // addition (exact for these bounds: both are below 0x80).
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHighBits = kOnes * 0x80;
  const char* p = value.data();
  size_t n = value.size();
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    std::memcpy(&w, p, sizeof(w));
    const uint64_t below = (w - kOnes * 0x20) & ~w;         // Some byte < 0x20.
    const uint64_t above = (w + kOnes * (0x7f - 0x7e)) | w;  // Some byte > 0x7e.
    if ((below | above) & kHighBits) return false;
  }
  for (; n > 0; ++p, --n) {
    const auto u = static_cast<unsigned char>(*p);
    if (u < 0x20 || u > 0x7e) return false;
  }
  return true;
}

bool IsBinaryHeaderKey(std::string_view key) {
  return key.size() >= 4 && key.substr(key.size() - 4) == "-bin";
}

void CountDroppedHeaders(DroppedHeader header, DropReason reason, uint64_t n) {
  if (n == 0) return;
  g_dropped[Slot(header, reason)].fetch_add(n, std::memory_order_relaxed);
}

uint64_t DroppedHeaderCount(DroppedHeader header, DropReason reason) {
  return g_dropped[Slot(header, reason)].load(std::memory_order_relaxed);
}

std::string_view DroppedHeaderLabel(DroppedHeader header) {
  switch (header) {
    case DroppedHeader::kTraceparent:
      return "traceparent";
    case DroppedHeader::kTracestate:
      return "tracestate";
    case DroppedHeader::kBaggage:
      return "baggage";
    case DroppedHeader::kEnvoyExpectedTimeout:
      return "x-envoy-expected-rq-timeout-ms";
    case DroppedHeader::kOther:
      break;
  }
  return "other";
}

std::string_view DropReasonLabel(DropReason reason) {
  switch (reason) {
    case DropReason::kInvalid:
      return "invalid";
    case DropReason::kLimit:
      return "limit";
    case DropReason::kBudget:
      break;
  }
  return "budget";
}

}  // namespace reqctx
