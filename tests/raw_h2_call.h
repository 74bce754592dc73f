// Test helper: one gRPC unary call written as raw HTTP/2 frames over a plain
// TCP socket, so a test can put ANY header bytes on the wire -- including
// `grpc-timeout` values and non-printable header values that gRPC's own
// clients (C++ and Python alike) parse, normalize or refuse before sending.
// The server under test is a normal gRPC server; what is exercised is its
// real HPACK parser, its grpc-timeout parsing into ServerContext::deadline()
// and reqctx's interceptor on top.
//
// Deliberately minimal: prior-knowledge h2c, one stream, HPACK literals
// without indexing (never Huffman) on the way out; on the way back it reads
// the response message and finds grpc-status in the header blocks (gRPC's
// encoder writes new names and non-binary values as plain literals), and
// reports RST_STREAM/GOAWAY. Not a general HTTP/2 client.
//
// Thread-safety: RawUnaryCall is reentrant (each call has its own socket).
#ifndef REQCTX_TESTS_RAW_H2_CALL_H_
#define REQCTX_TESTS_RAW_H2_CALL_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/time.h"

namespace reqctx::testing {

struct RawCallResult {
  bool connected = false;
  // The response message's bytes (without gRPC's 5-byte prefix), if any.
  std::optional<std::string> message;
  // grpc-status from the trailers (or trailers-only headers), if found.
  std::optional<int> grpc_status;
  std::optional<int> rst_stream_error;  // HTTP/2 error code of RST_STREAM.
  bool goaway = false;
  bool timed_out = false;  // Nothing ended the stream within the bound.
  absl::Duration took;
};

// Calls `path` (e.g. "/echo.v1.Echo/Echo") on 127.0.0.1:`port` with the
// serialized request `message`, the standard gRPC request headers, then
// `extra_headers` exactly as given (names and values are raw bytes, in
// order; repeated names are sent repeatedly). Waits at most `bound`.
RawCallResult RawUnaryCall(
    int port, const std::string& path, const std::string& message,
    const std::vector<std::pair<std::string, std::string>>& extra_headers,
    absl::Duration bound);

// How each stream of RawStreamFlood ends on the client's side.
enum class RawStreamEnd {
  kComplete,           // HEADERS, then the request message with END_STREAM.
  kResetAfterHeaders,  // HEADERS, then at once RST_STREAM(CANCEL).
  kResetAfterMessage,  // HEADERS, the message (END_STREAM), RST_STREAM.
  kHeadersOnly,        // HEADERS only: no message, never half-closed.
  // HEADERS, then the first half of the length-prefixed message (its 5-byte
  // prefix announces the whole), never the rest, never half-closed.
  kStallMidMessage,
  // The same half message, then RST_STREAM(CANCEL).
  kResetMidMessage,
};

struct RawFloodResult {
  bool connected = false;
  int answered = 0;  // streams the server ended (END_STREAM or RST_STREAM)
  bool goaway = false;
};

// One connection to 127.0.0.1:`port` carrying `streams` concurrent calls to
// `path` (written back to back, headers as RawUnaryCall's plus
// `extra_headers`), each ended as `end` says. Then reads what comes back
// until every stream was ended by the server (kComplete: answered;
// kStallMidMessage: answered or reset, e.g. by a stream timeout) or, for the
// others, until `hold` passed, and closes the socket (which ends whatever is
// left). Waits at most `bound` in all.
RawFloodResult RawStreamFlood(
    int port, const std::string& path, const std::string& message,
    const std::vector<std::pair<std::string, std::string>>& extra_headers,
    int streams, RawStreamEnd end, absl::Duration hold, absl::Duration bound);

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_RAW_H2_CALL_H_
