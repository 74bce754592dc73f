#include "ledger/grpc_ledger.h"

#include <optional>
#include <utility>

namespace reqctx {

grpc::Status WithLedger(const grpc::Status& status, const Ledger& ledger) {
  if (status.ok()) return status;
  std::optional<std::string> details =
      MergeLedgerDetails(status.error_details(), status.error_code(),
                         status.error_message(), ledger);
  if (!details.has_value()) return status;
  return grpc::Status(status.error_code(), status.error_message(),
                      *std::move(details));
}

absl::StatusOr<Ledger> LedgerFromStatus(const grpc::Status& status) {
  return DecodeLedgerDetails(status.error_details());
}

absl::StatusOr<Ledger> LedgerFromTrailers(const grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto range = trailers.equal_range(
      grpc::string_ref(kStatusDetailsKey.data(), kStatusDetailsKey.size()));
  if (range.first == range.second) {
    return absl::NotFoundError("no grpc-status-details-bin trailer");
  }
  if (std::next(range.first) != range.second) {
    return absl::InvalidArgumentError(
        "budget ledger: grpc-status-details-bin sent more than once");
  }
  const grpc::string_ref& v = range.first->second;
  return DecodeLedgerDetails(std::string_view(v.data(), v.size()));
}

std::string LedgerLineOf(const grpc::Status& status) {
  absl::StatusOr<Ledger> l = LedgerFromStatus(status);
  return l.ok() ? LedgerLine(*l) : std::string();
}

}  // namespace reqctx
