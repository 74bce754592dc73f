// Writes a three-hop ledger as the glue would build it (two recorders, the
// middle hop's ledger returned to the frontend) to argv[1], as the serialised
// google.rpc.Status a client receives in grpc-status-details-bin, and its
// readable line to argv[2]; for ledger_python_decode_test.
#include <fstream>
#include <iostream>

#include "absl/time/time.h"
#include "ledger/ledger.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: ledger_sample DETAILS_OUT LINE_OUT\n";
    return 2;
  }
  using absl::Milliseconds;
  using absl::Microseconds;
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const std::string_view method = "/echo.v1.Echo/Echo";

  // The middle hop: 199 ms left, 150.2 ms of work, then the deadline ran
  // out before its call to the backend could be sent.
  reqctx::LedgerRecorder middle(method, "middle", t0, Milliseconds(199));
  middle.HandlerStarted(t0);
  auto id = middle.OutboundStarted(method, absl::ZeroDuration(),
                                   t0 + Microseconds(150200));
  middle.OutboundEnded(id, t0 + Microseconds(150200), 4, /*sent=*/false);
  middle.HandlerEnded(t0 + Microseconds(150200));
  middle.Ended(4, reqctx::CauseKind::kCallerDeadline, "frontend",
               Microseconds(-200));

  // The frontend: 250 ms, 0.4 ms queued, 50.1 ms of work, then the call.
  reqctx::LedgerRecorder front(method, "frontend", t0, Milliseconds(250));
  front.SetQueued(Microseconds(400));
  front.HandlerStarted(t0 + Microseconds(400));
  absl::Time call = t0 + Microseconds(50500);
  auto out = front.OutboundStarted(method, Milliseconds(199), call);
  front.OutboundEnded(out, call + Milliseconds(199), 4, true,
                      middle.Snapshot().root);
  front.HandlerEnded(call + Milliseconds(199));
  front.Ended(4, reqctx::CauseKind::kCallerDeadline, "",
              Microseconds(-300));

  reqctx::Ledger ledger = front.Snapshot();
  std::ofstream(argv[1], std::ios::binary)
      << reqctx::EncodeLedgerStatus(4, "deadline exceeded", ledger);
  std::ofstream(argv[2]) << reqctx::LedgerLine(ledger) << "\n";
  std::cout << reqctx::LedgerLine(ledger) << "\n";
  return 0;
}
