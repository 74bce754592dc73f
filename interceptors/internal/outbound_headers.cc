#include "interceptors/internal/outbound_headers.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "interceptors/client_interceptor.h"
#include "w3c/baggage.h"
#include "w3c/header_rules.h"
#include "w3c/trace_propagation.h"
#include "w3c/tracestate.h"

namespace reqctx::internal {
namespace {

constexpr std::string_view kTraceparent = kTraceparentHeader;
constexpr std::string_view kTracestate = kTracestateHeader;
constexpr std::string_view kBaggage = kBaggageHeader;

bool IsPropagationHeader(std::string_view key) {
  return key == kTraceparent || key == kTracestate || key == kBaggage;
}

bool IsLegalEntry(std::string_view key, std::string_view value) {
  return IsLegalGrpcHeaderKey(key) &&
         (IsBinaryHeaderKey(key) || IsLegalGrpcHeaderValue(value));
}

// The room `budget` leaves for a `key` entry after `used` bytes: the most
// value bytes that still fit (0 if none).
size_t RoomFor(std::string_view key, size_t budget, size_t used) {
  const size_t overhead = HeaderEntrySize(key, "");
  return budget > used + overhead ? budget - used - overhead : 0;
}

// All values of `key`, joined with ',' (repeated headers are one list), and
// removed from `metadata`.
std::string TakeJoined(std::multimap<std::string, std::string>& metadata,
                       std::string_view key) {
  std::string joined;
  auto [begin, end] = metadata.equal_range(std::string(key));
  for (auto it = begin; it != end; ++it) {
    if (!joined.empty()) joined.push_back(',');
    joined.append(it->second);
  }
  metadata.erase(begin, end);
  return joined;
}

}  // namespace

void EnforceOutboundHeaders(std::multimap<std::string, std::string>& metadata,
                            size_t budget) {
  // The fast path: one pass, no allocation, nothing changed.
  bool legal = true;
  size_t tracestates = 0, baggages = 0, used = 0;
  for (const auto& [key, value] : metadata) {
    legal = legal && IsLegalEntry(key, value);
    if (IsPropagationHeader(key)) used += HeaderEntrySize(key, value);
    tracestates += key == kTracestate;
    baggages += key == kBaggage;
  }
  if (legal && tracestates <= 1 && baggages <= 1 && used <= budget) return;

  // Illegal entries other than the two lists go (the lists keep their valid
  // members below).
  for (auto it = metadata.begin(); it != metadata.end();) {
    const std::string_view key = it->first;
    if (key == kTracestate || key == kBaggage ||
        IsLegalEntry(key, it->second)) {
      ++it;
      continue;
    }
    CountDroppedHeaders(key == kTraceparent ? DroppedHeader::kTraceparent
                                            : DroppedHeader::kOther,
                        DropReason::kInvalid);
    it = metadata.erase(it);
  }
  used = 0;
  for (const auto& [key, value] : metadata) {
    if (key == kTraceparent) used += HeaderEntrySize(key, value);
  }

  if (tracestates > 0) {
    const std::string joined = TakeJoined(metadata, kTracestate);
    SanitizedTracestate ts = SanitizeTracestate(joined);
    CountDroppedHeaders(DroppedHeader::kTracestate, DropReason::kInvalid,
                        ts.invalid);
    CountDroppedHeaders(DroppedHeader::kTracestate, DropReason::kLimit,
                        ts.over_limit);
    if (const size_t room = RoomFor(kTracestate, budget, used);
        ts.value.size() > room) {
      // Already valid: what this second pass drops is the budget's doing.
      ts = SanitizeTracestate(ts.value, room);
      CountDroppedHeaders(DroppedHeader::kTracestate, DropReason::kBudget,
                          ts.over_limit);
    }
    if (!ts.value.empty()) {
      used += HeaderEntrySize(kTracestate, ts.value);
      metadata.emplace(std::string(kTracestate), std::move(ts.value));
    }
  }

  if (baggages > 0) {
    const std::string joined = TakeJoined(metadata, kBaggage);
    BaggageDrops parse_drops;
    std::vector<BaggageMember> members = ParseBaggage(joined, &parse_drops);
    CountDroppedHeaders(DroppedHeader::kBaggage, DropReason::kInvalid,
                        parse_drops.invalid);
    CountDroppedHeaders(DroppedHeader::kBaggage, DropReason::kLimit,
                        parse_drops.over_limit);
    const size_t room = RoomFor(kBaggage, budget, used);
    BaggageDrops budget_drops;
    std::string header = FormatBaggage(members, room, &budget_drops);
    if (budget_drops.over_limit > 0) {
      // Short of room: the member the next hop's shedder reads goes first,
      // so that the members the budget pushes out are never that one.
      std::stable_partition(members.begin(), members.end(),
                            [](const BaggageMember& m) {
                              return m.key == kBudgetFirstBaggageKey;
                            });
      budget_drops = BaggageDrops();
      header = FormatBaggage(members, room, &budget_drops);
    }
    CountDroppedHeaders(DroppedHeader::kBaggage, DropReason::kBudget,
                        budget_drops.over_limit + budget_drops.invalid);
    if (!header.empty()) {
      metadata.emplace(std::string(kBaggage), std::move(header));
    }
  }
}

}  // namespace reqctx::internal
