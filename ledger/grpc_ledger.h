// The budget ledger on gRPC's types: put it on a failed call's grpc::Status
// (grpc-status-details-bin) and get it back from a finished call.
//
//   // Server side (the glue, once the handler's status is known):
//   status = WithLedger(status, recorder.Snapshot());
//   // Client side, after the call finished:
//   absl::StatusOr<Ledger> l = LedgerFromStatus(status);
//   if (l.ok()) std::cerr << LedgerLine(*l) << "\n";
//
// Thread-safety: pure functions, safe from any thread. ClientContext is read
// only after the call finished (gRPC's own rule for its trailers).
#ifndef REQCTX_LEDGER_GRPC_LEDGER_H_
#define REQCTX_LEDGER_GRPC_LEDGER_H_

#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "ledger/ledger.h"

namespace reqctx {

// The trailer that carries google.rpc.Status (gRPC's own name).
inline constexpr std::string_view kStatusDetailsKey = "grpc-status-details-bin";

// `status` with `ledger` in its error details under MergeLedgerDetails'
// rule: details the status already carries are kept (only reqctx's own are
// replaced); if they are not a google.rpc.Status or there is no room,
// `status` is returned unchanged. An OK status is returned unchanged (gRPC
// sends no details with OK).
grpc::Status WithLedger(const grpc::Status& status, const Ledger& ledger);

// The ledger a finished call returned, from its status's error details
// (DecodeLedgerDetails: kNotFound without one, kInvalidArgument when
// rejected).
absl::StatusOr<Ledger> LedgerFromStatus(const grpc::Status& status);

// The same from a finished call's trailers; a trailer sent more than once is
// rejected (kInvalidArgument).
absl::StatusOr<Ledger> LedgerFromTrailers(const grpc::ClientContext& context);

// LedgerLine of the ledger `status` carries, or "" when it carries none (or
// one that was rejected).
std::string LedgerLineOf(const grpc::Status& status);

}  // namespace reqctx

#endif  // REQCTX_LEDGER_GRPC_LEDGER_H_
