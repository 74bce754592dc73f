// The outbound deadline of a call made under a Context, chosen so that the
// next hop's deadline is never later than this hop's (internal to
// //interceptors; the contract users see is in client_interceptor.h).
//
// gRPC sends a call's deadline as the `grpc-timeout` header, the time left
// when the headers are written, rounded UP to what the header can say (at
// most 8 digits): gRPC 1.51 (src/core/lib/transport/timeout_encoding.cc,
// Timeout::FromMillis) writes whole milliseconds below 1 s, units of 10 ms
// below 10 s, 100 ms below 100 s, then seconds, 10 s, 100 s, minutes, 10 and
// 100 minutes, hours (a value that is a whole number of a larger unit is
// written in it, which is the same time). Each hop re-encodes its own
// remaining time, so without compensation a deadline grows hop by hop (a 1 s
// deadline reached the 5th process as 1,029-1,039 ms).
//
// Worse, gRPC 1.51's HPACK encoder (src/core/ext/transport/chttp2/transport/
// hpack_encoder.cc, the grpc-timeout compressor) re-sends a timeout it sent
// earlier on the same connection, from its dynamic table, instead of the new
// one when the new one is shorter but within 3% of it: the peer then decodes
// up to 3.09% MORE than the time left. On a busy channel, and in a loop
// (every hop on one connection), that is what made a deadline grow (a
// self-pointing --next kept ~960 ms left for hundreds of hops). So the
// outbound timeout is chosen so that its encoding is at most 97% of the time
// left: any timeout gRPC may re-send in its place (shorter than the encoding
// / 0.97) is still within the time left.
//
// On top of the rounding, gRPC turns the deadline into whole milliseconds
// rounded up and its clock into whole milliseconds rounded down, so the
// timeout it encodes may be 1 ms more than the time actually left:
// kGrpcTimeoutSlackMs covers that (with 1 ms to spare).
//
// The price: each hop gives its next hop up to 3% + one unit of the table +
// 2 ms less than it has itself (a 1 s deadline: 968 ms; 50 s: 48.498 s).
// Thread-safety: pure functions.
#ifndef REQCTX_INTERCEPTORS_INTERNAL_GRPC_TIMEOUT_H_
#define REQCTX_INTERCEPTORS_INTERNAL_GRPC_TIMEOUT_H_

#include <cstdint>

#include "absl/time/time.h"

namespace reqctx::internal {

// How much more than the time left gRPC may measure before rounding (see
// above).
inline constexpr int64_t kGrpcTimeoutSlackMs = 2;

// The timeout, in ms, that the peer decodes from the grpc-timeout gRPC 1.51
// writes for a call with `millis` ms left: 1 ms for `millis` <= 0 (written
// as "1n", which gRPC decodes rounded up to 1 ms), else `millis` rounded up
// to the first unit of the table above that can hold it (capped at 27,000
// hours, gRPC's maximum). Non-decreasing in `millis` below 60,000 s (see
// LargestEncodedAtMost).
int64_t GrpcEncodedTimeoutMs(int64_t millis);

// What a binary search for the largest g with GrpcEncodedTimeoutMs(g) <=
// target_ms finds (the encoding is >= g below the 27,000 h cap, so g <=
// target_ms): below 60,000 s, where the encoding is non-decreasing, the
// largest value the table writes exactly that is at most `target_ms`,
// computed directly; beyond, that binary search. For target_ms >= 0.
int64_t LargestEncodedAtMost(int64_t target_ms);

// gRPC 1.51's HPACK encoder re-sends an earlier timeout T instead of a new
// one N when -3 < 100 * (N / T - 1) <= 0 (see above).
inline constexpr int64_t kHpackTimeoutReusePercent = 3;

// The largest whole-ms timeout t such that GrpcEncodedTimeoutMs(t') <= 97% of
// `left` (in whole ms, rounded down) for every t' <= t + kGrpcTimeoutSlackMs,
// so that neither the encoding nor a re-sent earlier timeout exceeds `left`:
// given to an outbound call with `left` remaining (this hop's time left),
// the next hop's remaining time is never more than this hop's. Zero if `left` is under about
// kGrpcTimeoutSlackMs + 1 ms (the call then fails at once with
// DEADLINE_EXCEEDED); InfiniteDuration() for InfiniteDuration(). Costs a few
// dozen integer operations (LargestEncodedAtMost).
absl::Duration OutboundGrpcTimeout(absl::Duration left);

}  // namespace reqctx::internal

#endif  // REQCTX_INTERCEPTORS_INTERNAL_GRPC_TIMEOUT_H_
