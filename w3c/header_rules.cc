#include "w3c/header_rules.h"

#include <array>
#include <atomic>

namespace reqctx {
namespace {

std::array<std::atomic<uint64_t>, kDroppedHeaderKinds * kDropReasons>
    g_dropped{};

size_t Slot(DroppedHeader header, DropReason reason) {
  return static_cast<size_t>(header) * kDropReasons +
         static_cast<size_t>(reason);
}

}  // namespace

bool IsLegalGrpcHeaderKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

bool IsLegalGrpcHeaderValue(std::string_view value) {
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
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
