// Raw HTTP/2 gRPC unary call for bad-input tests (see raw_h2_call.h).
#include "tests/raw_h2_call.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <string_view>

#include "absl/time/clock.h"

namespace reqctx::testing {
namespace {

constexpr uint8_t kData = 0x0, kHeaders = 0x1, kRstStream = 0x3,
                  kSettings = 0x4, kPing = 0x6, kGoaway = 0x7,
                  kContinuation = 0x9;
constexpr uint8_t kEndStream = 0x1, kAck = 0x1, kEndHeaders = 0x4;
constexpr size_t kMaxFrame = 16384;  // HTTP/2's default SETTINGS_MAX_FRAME_SIZE.

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream,
                  const std::string& payload) {
  std::string f;
  const size_t n = payload.size();
  f.push_back(static_cast<char>(n >> 16));
  f.push_back(static_cast<char>(n >> 8));
  f.push_back(static_cast<char>(n));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  for (int shift = 24; shift >= 0; shift -= 8) {
    f.push_back(static_cast<char>((stream >> shift) & 0xff));
  }
  return f + payload;
}

// HPACK integer with a 7-bit prefix (RFC 7541 5.1), Huffman bit clear.
void AppendLength(std::string& out, size_t n) {
  if (n < 127) {
    out.push_back(static_cast<char>(n));
    return;
  }
  out.push_back(127);
  n -= 127;
  while (n >= 128) {
    out.push_back(static_cast<char>((n & 0x7f) | 0x80));
    n >>= 7;
  }
  out.push_back(static_cast<char>(n));
}

// "Literal Header Field without Indexing -- New Name" (RFC 7541 6.2.2).
void AppendHeader(std::string& block, const std::string& name,
                  const std::string& value) {
  block.push_back(0);
  AppendLength(block, name.size());
  block += name;
  AppendLength(block, value.size());
  block += value;
}

bool SendAll(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// A TCP connection to 127.0.0.1:`port` (TCP_NODELAY), or -1.
int ConnectLoopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

// The request's header block: the standard gRPC headers, then `extra`.
std::string RequestBlock(
    int port, const std::string& path,
    const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string block;
  AppendHeader(block, ":method", "POST");
  AppendHeader(block, ":scheme", "http");
  AppendHeader(block, ":path", path);
  AppendHeader(block, ":authority", "127.0.0.1:" + std::to_string(port));
  AppendHeader(block, "content-type", "application/grpc");
  AppendHeader(block, "te", "trailers");
  for (const auto& [name, value] : extra) AppendHeader(block, name, value);
  return block;
}

// `block` on `stream` as HEADERS (+ CONTINUATION when larger than a frame).
std::string HeaderFrames(uint32_t stream, const std::string& block) {
  std::string out;
  for (size_t at = 0; at < block.size() || at == 0; at += kMaxFrame) {
    const bool first = at == 0;
    const bool last = at + kMaxFrame >= block.size();
    out += Frame(first ? kHeaders : kContinuation, last ? kEndHeaders : 0,
                 stream, block.substr(at, kMaxFrame));
  }
  return out;
}

// gRPC's length-prefixed message (uncompressed).
std::string GrpcMessage(const std::string& message) {
  std::string out(5, '\0');
  const uint32_t n = static_cast<uint32_t>(message.size());
  for (int i = 0; i < 4; ++i) out[1 + i] = static_cast<char>(n >> (24 - 8 * i));
  return out + message;
}

uint32_t Uint32(std::string_view b) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[0])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(b[3]));
}

struct RawFrame {
  uint8_t type;
  uint8_t flags;
  uint32_t stream;
  std::string payload;
};

// The next complete frame in `in` (taken out of it), or nullopt. SETTINGS
// and PING are acknowledged on `fd` here.
std::optional<RawFrame> PopFrame(int fd, std::string& in) {
  if (in.size() < 9) return std::nullopt;
  const size_t len = (static_cast<unsigned char>(in[0]) << 16) |
                     (static_cast<unsigned char>(in[1]) << 8) |
                     static_cast<unsigned char>(in[2]);
  if (in.size() < 9 + len) return std::nullopt;
  RawFrame f{static_cast<uint8_t>(in[3]), static_cast<uint8_t>(in[4]),
             Uint32(std::string_view(in).substr(5, 4)) & 0x7fffffffu,
             in.substr(9, len)};
  in.erase(0, 9 + len);
  if (f.type == kSettings && (f.flags & kAck) == 0) {
    SendAll(fd, Frame(kSettings, kAck, 0, ""));
  } else if (f.type == kPing && (f.flags & kAck) == 0) {
    SendAll(fd, Frame(kPing, kAck, 0, f.payload));
  }
  return f;
}

enum class ReadResult { kRead, kTimedOut, kClosed };

// Waits until `end` for bytes on `fd` and appends them to `in`.
ReadResult ReadSome(int fd, std::string& in, absl::Time end) {
  const int64_t ms = absl::ToInt64Milliseconds(end - absl::Now());
  pollfd p{fd, POLLIN, 0};
  if (ms <= 0 || poll(&p, 1, static_cast<int>(ms)) <= 0) {
    return ReadResult::kTimedOut;
  }
  char buf[16384];
  ssize_t got = recv(fd, buf, sizeof(buf), 0);
  if (got <= 0) return ReadResult::kClosed;
  in.append(buf, static_cast<size_t>(got));
  return ReadResult::kRead;
}

// Finds a plain-literal "grpc-status" in an HPACK block and reads its value.
std::optional<int> FindGrpcStatus(const std::string& block) {
  const std::string key = "grpc-status";
  size_t at = block.find(key);
  if (at == std::string::npos || at + key.size() >= block.size()) {
    return std::nullopt;
  }
  const size_t value_at = at + key.size();
  const auto len = static_cast<unsigned char>(block[value_at]);
  if ((len & 0x80) != 0 || len == 0 || value_at + 1 + len > block.size()) {
    return std::nullopt;  // Huffman-coded or truncated: not understood.
  }
  int status = 0;
  for (size_t i = value_at + 1; i < value_at + 1 + len; ++i) {
    if (block[i] < '0' || block[i] > '9') return std::nullopt;
    status = status * 10 + (block[i] - '0');
  }
  return status;
}

}  // namespace

RawCallResult RawUnaryCall(
    int port, const std::string& path, const std::string& message,
    const std::vector<std::pair<std::string, std::string>>& extra_headers,
    absl::Duration bound) {
  RawCallResult result;
  const absl::Time start = absl::Now();
  const absl::Time end = start + bound;
  const int fd = ConnectLoopback(port);
  if (fd < 0) return result;
  result.connected = true;

  std::string out = kPreface;
  out += Frame(kSettings, 0, 0, "");
  out += HeaderFrames(1, RequestBlock(port, path, extra_headers));
  out += Frame(kData, kEndStream, 1, GrpcMessage(message));
  // The server may answer (even close) before reading everything: a failed
  // send is not an error by itself; what comes back says what happened.
  SendAll(fd, out);

  std::string in;
  std::string headers;  // Header block of stream 1 (headers + trailers).
  std::string data;     // DATA payload of stream 1.
  bool stream_done = false;
  while (!stream_done && !result.goaway) {
    // Handle every complete frame received so far.
    while (std::optional<RawFrame> f = PopFrame(fd, in)) {
      if (f->type == kGoaway) {
        result.goaway = true;
      } else if (f->stream == 1 && f->type == kRstStream &&
                 f->payload.size() == 4) {
        result.rst_stream_error = Uint32(f->payload);
        stream_done = true;
      } else if (f->stream == 1 &&
                 (f->type == kHeaders || f->type == kContinuation)) {
        headers += f->payload;  // (gRPC sends no padding or priority here.)
        if ((f->flags & kEndStream) != 0) stream_done = true;
      } else if (f->stream == 1 && f->type == kData) {
        data += f->payload;
        if ((f->flags & kEndStream) != 0) stream_done = true;
      }
    }
    if (stream_done || result.goaway) break;
    const ReadResult r = ReadSome(fd, in, end);
    if (r == ReadResult::kTimedOut) result.timed_out = true;
    if (r != ReadResult::kRead) break;
  }
  close(fd);
  result.took = absl::Now() - start;
  result.grpc_status = FindGrpcStatus(headers);
  if (data.size() >= 5) {
    const size_t len = (static_cast<unsigned char>(data[1]) << 24) |
                       (static_cast<unsigned char>(data[2]) << 16) |
                       (static_cast<unsigned char>(data[3]) << 8) |
                       static_cast<unsigned char>(data[4]);
    if (data.size() >= 5 + len) result.message = data.substr(5, len);
  }
  return result;
}

RawFloodResult RawStreamFlood(
    int port, const std::string& path, const std::string& message,
    const std::vector<std::pair<std::string, std::string>>& extra_headers,
    int streams, RawStreamEnd end_as, absl::Duration hold,
    absl::Duration bound) {
  RawFloodResult result;
  const absl::Time start = absl::Now();
  const absl::Time end = start + bound;
  const absl::Time hold_end = std::min(start + hold, end);
  const int fd = ConnectLoopback(port);
  if (fd < 0) return result;
  result.connected = true;
  const std::string block = RequestBlock(port, path, extra_headers);
  const std::string payload = GrpcMessage(message);
  const std::string cancel("\0\0\0\x08", 4);  // CANCEL
  std::string out = kPreface;
  out += Frame(kSettings, 0, 0, "");
  // Room for every answer: the connection's receive window, widened.
  out += Frame(0x8 /* WINDOW_UPDATE */, 0, 0, std::string("\x3f\xff\0\0", 4));
  for (int i = 0; i < streams; ++i) {
    const uint32_t id = 1 + 2 * static_cast<uint32_t>(i);
    out += HeaderFrames(id, block);
    switch (end_as) {
      case RawStreamEnd::kComplete:
        out += Frame(kData, kEndStream, id, payload);
        break;
      case RawStreamEnd::kResetAfterHeaders:
        out += Frame(kRstStream, 0, id, cancel);
        break;
      case RawStreamEnd::kResetAfterMessage:
        out += Frame(kData, kEndStream, id, payload);
        out += Frame(kRstStream, 0, id, cancel);
        break;
      case RawStreamEnd::kHeadersOnly:
        break;
      case RawStreamEnd::kStallMidMessage:
        out += Frame(kData, 0, id, payload.substr(0, payload.size() / 2));
        break;
      case RawStreamEnd::kResetMidMessage:
        out += Frame(kData, 0, id, payload.substr(0, payload.size() / 2));
        out += Frame(kRstStream, 0, id, cancel);
        break;
    }
  }
  SendAll(fd, out);
  const bool wait_all = end_as == RawStreamEnd::kComplete ||
                        end_as == RawStreamEnd::kStallMidMessage;
  std::string in;
  std::vector<bool> ended(static_cast<size_t>(streams), false);
  for (;;) {
    while (std::optional<RawFrame> f = PopFrame(fd, in)) {
      if (f->type == kGoaway) result.goaway = true;
      const size_t i = (f->stream - 1) / 2;
      if (f->stream % 2 == 1 && i < ended.size() && !ended[i] &&
          (f->type == kRstStream ||
           ((f->type == kHeaders || f->type == kData) &&
            (f->flags & kEndStream) != 0))) {
        ended[i] = true;
        ++result.answered;
      }
    }
    if (result.goaway || (wait_all && result.answered >= streams)) break;
    if (ReadSome(fd, in, wait_all ? end : hold_end) != ReadResult::kRead) break;
  }
  close(fd);
  return result;
}

}  // namespace reqctx::testing
