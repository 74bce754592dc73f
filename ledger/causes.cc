#include "ledger/causes.h"

#include <array>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"

namespace reqctx {
namespace {

struct CauseEntry {
  std::string_view name;
  std::string_view phrase;
  absl::StatusCode code;
};

// Indexed by CauseKind's value.
constexpr std::array<CauseEntry, kCauseKinds> kCauses = {{
    {"NONE", "", absl::StatusCode::kOk},
    {"CALLER_DEADLINE", "caller's deadline", absl::StatusCode::kDeadlineExceeded},
    {"CLIENT_CANCEL", "client cancel", absl::StatusCode::kCancelled},
    {"SERVER_SHUTDOWN", "server shutting down", absl::StatusCode::kCancelled},
    {"SHED", "shed by the load shedder", absl::StatusCode::kResourceExhausted},
    {"REPLY_MARGIN", "reply margin", absl::StatusCode::kDeadlineExceeded},
    {"GROUP_SIBLING", "a sibling in the group failed",
     absl::StatusCode::kCancelled},
    {"HEDGE_LOST", "hedge lost", absl::StatusCode::kCancelled},
    {"DETACHED_BOUND", "detached call's bound",
     absl::StatusCode::kDeadlineExceeded},
    {"DEADLINE_POLICY", "server's deadline policy",
     absl::StatusCode::kDeadlineExceeded},
    {"MIN_BUDGET", "below the minimum budget",
     absl::StatusCode::kDeadlineExceeded},
}};

// Debian's abseil has its own string_view.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

const CauseEntry& Entry(CauseKind kind) {
  size_t i = static_cast<size_t>(kind);
  return kCauses[i < kCauses.size() ? i : 0];
}

std::string_view CodeWord(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kDeadlineExceeded:
      return "deadline exceeded";
    case absl::StatusCode::kCancelled:
      return "canceled";
    case absl::StatusCode::kUnavailable:
      return "unavailable";
    case absl::StatusCode::kResourceExhausted:
      return "resource exhausted";
    default:
      return "ended";
  }
}

}  // namespace

std::string_view CauseName(CauseKind kind) { return Entry(kind).name; }

std::optional<CauseKind> CauseFromName(std::string_view name) {
  for (size_t i = 0; i < kCauses.size(); ++i) {
    if (kCauses[i].name == name) return static_cast<CauseKind>(i);
  }
  return std::nullopt;
}

std::optional<CauseKind> CauseFromNumber(int64_t n) {
  if (n < 0 || n >= kCauseKinds) return std::nullopt;
  return static_cast<CauseKind>(n);
}

absl::StatusCode CauseCode(CauseKind kind) { return Entry(kind).code; }

std::string_view CausePhrase(CauseKind kind) { return Entry(kind).phrase; }

std::string CauseMessage(CauseKind kind, std::string_view hop) {
  if (kind == CauseKind::kNone) return "";
  std::string out =
      absl::StrCat(Sv(CodeWord(CauseCode(kind))), ": ", Sv(CausePhrase(kind)));
  if (!hop.empty()) {
    absl::StrAppend(&out, kind == CauseKind::kGroupSibling ? " (" : " (set by ",
                    Sv(hop), ")");
  }
  return out;
}

std::string CauseDescription(const absl::Status& cause) {
  const CauseKind kind = CauseOf(cause);
  if (kind == CauseKind::kNone) return "";
  std::string out = CauseMessage(kind, CauseHop(cause));
  const std::string_view message(cause.message().data(),
                                 cause.message().size());
  if (!message.empty() && message != out && message != CausePhrase(kind)) {
    absl::StrAppend(&out, ": ", Sv(message));
  }
  return out;
}

absl::Status MakeCause(CauseKind kind, std::string_view hop) {
  if (kind == CauseKind::kNone) return absl::OkStatus();
  return MarkCause(absl::Status(CauseCode(kind), CauseMessage(kind, hop)),
                   kind, hop);
}

absl::Status MarkCause(absl::Status status, CauseKind kind,
                       std::string_view hop) {
  if (status.ok() || kind == CauseKind::kNone) return status;
  status.SetPayload(Sv(kCausePayloadUrl), absl::Cord(Sv(CauseName(kind))));
  if (!hop.empty()) {
    status.SetPayload(Sv(kCauseHopPayloadUrl), absl::Cord(Sv(hop)));
  }
  return status;
}

const absl::Status& CauseStatus(CauseKind kind) {
  static const std::array<absl::Status, kCauseKinds>* const statuses = [] {
    auto* out = new std::array<absl::Status, kCauseKinds>();
    for (int i = 0; i < kCauseKinds; ++i) {
      (*out)[i] = MakeCause(static_cast<CauseKind>(i));
    }
    return out;
  }();
  size_t i = static_cast<size_t>(kind);
  return (*statuses)[i < statuses->size() ? i : 0];
}

CauseKind CauseOf(const absl::Status& status) {
  if (status.ok()) return CauseKind::kNone;
  absl::optional<absl::Cord> p = status.GetPayload(Sv(kCausePayloadUrl));
  if (!p.has_value()) return CauseKind::kNone;
  return CauseFromName(std::string(*p)).value_or(CauseKind::kNone);
}

std::string CauseHop(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(Sv(kCauseHopPayloadUrl));
  return p.has_value() ? std::string(*p) : std::string();
}

std::string_view CodeName(int code) {
  static constexpr std::string_view kNames[kStatusCodes] = {
      "OK",           "CANCELLED",        "UNKNOWN",
      "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
      "FAILED_PRECONDITION", "ABORTED",    "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",
      "DATA_LOSS",    "UNAUTHENTICATED"};
  return code >= 0 && code < kStatusCodes ? kNames[code] : "UNKNOWN";
}

}  // namespace reqctx
