// Behind Envoy (issue 24, section 1): with ServerPolicyOptions::behind_envoy
// (ServerCallRules::behind_envoy; the echo server's --behind_envoy) a call's
// deadline is the smaller of grpc-timeout and Envoy's
// x-envoy-expected-rq-timeout-ms; malformed values are ignored and counted;
// without the option the header changes nothing. The parser on its own
// (interceptors/internal/incoming_deadline.h), then end to end on the echo
// service over 127.0.0.1 (the header sent as a client's metadata, as Envoy
// sends it upstream).
#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "interceptors/internal/incoming_deadline.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"
#include "tests/echo_chain.h"
#include "tests/raw_h2_call.h"
#include "w3c/header_rules.h"

namespace reqctx::testing {
namespace {

using internal::EnvoyRemaining;
using internal::kEnvoyExpectedTimeoutHeader;

uint64_t Malformed() {
  return DroppedHeaderCount(DroppedHeader::kEnvoyExpectedTimeout,
                            DropReason::kInvalid);
}

std::optional<absl::Duration> Envoy(std::optional<absl::Duration> remaining,
                                    std::vector<std::string_view> values) {
  return EnvoyRemaining(remaining, {values.data(), values.size()});
}

TEST(EnvoyRemainingTest, SmallerOfTheTwoWins) {
  EXPECT_EQ(Envoy(absl::Seconds(10), {"300"}), absl::Milliseconds(300));
  // Envoy never extends a deadline.
  EXPECT_EQ(Envoy(absl::Seconds(10), {"20000"}), absl::Seconds(10));
  // No grpc-timeout: Envoy's alone.
  EXPECT_EQ(Envoy(std::nullopt, {"1500"}), absl::Milliseconds(1500));
  // Repeated: the smallest.
  EXPECT_EQ(Envoy(absl::Seconds(10), {"900", "250", "400"}),
            absl::Milliseconds(250));
  // Already expired stays expired.
  EXPECT_EQ(Envoy(absl::Milliseconds(-5), {"300"}), absl::Milliseconds(-5));
  EXPECT_EQ(Envoy(absl::Seconds(10), {}), absl::Seconds(10));
  // 18 digits is the longest accepted.
  EXPECT_EQ(Envoy(std::nullopt, {"999999999999999999"}),
            absl::Milliseconds(999999999999999999));
}

TEST(EnvoyRemainingTest, ZeroIsEnvoysNoTimeoutAndNotCounted) {
  const uint64_t before = Malformed();
  EXPECT_EQ(Envoy(absl::Seconds(10), {"0"}), absl::Seconds(10));
  EXPECT_EQ(Envoy(std::nullopt, {"0"}), std::nullopt);
  EXPECT_EQ(Malformed(), before);
}

TEST(EnvoyRemainingTest, MalformedValuesAreIgnoredAndCounted) {
  const std::vector<std::string_view> bad = {
      "",     "-5",  "+5",  " 5",  "5 ",   "5ms", "1.5", "0x10", "abc",
      "1e3",  "5,6", "\t5", "٣",   "9999999999999999999",  // 19 digits
      "99999999999999999999999999999"};
  const uint64_t before = Malformed();
  EXPECT_EQ(Envoy(absl::Seconds(10), bad), absl::Seconds(10));
  EXPECT_EQ(Envoy(std::nullopt, bad), std::nullopt);
  EXPECT_EQ(Malformed() - before, 2 * bad.size());
  // A valid value among malformed ones still counts.
  EXPECT_EQ(Envoy(absl::Seconds(10), {"x", "700", "-1"}),
            absl::Milliseconds(700));
  EXPECT_EQ(Malformed() - before, 2 * bad.size() + 2);
}

// One echo server (no next hop) with or without the option.
std::unique_ptr<echo::EchoServer> StartServer(bool behind_envoy) {
  echo::EchoServerOptions options;
  options.name = "backend";
  options.server_policy.behind_envoy = behind_envoy;
  auto server = echo::EchoServer::Start(options);
  if (!server.ok()) return nullptr;
  return std::move(*server);
}

struct Reply {
  grpc::Status status;
  ::echo::v1::EchoResponse response;
  absl::Duration took;
};

// An Echo call with a grpc-timeout of `timeout` and the Envoy header values
// `envoy` (plain gRPC channel: nothing of reqctx on the client side).
Reply Call(const echo::EchoServer& server, absl::Duration timeout,
           const std::vector<std::string>& envoy, int64_t work_ms = 0) {
  auto stub = ::echo::v1::Echo::NewStub(grpc::CreateChannel(
      server.address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext cc;
  cc.set_deadline(std::chrono::system_clock::now() +
                  absl::ToChronoMilliseconds(timeout));
  for (const std::string& v : envoy) {
    cc.AddMetadata(std::string(kEnvoyExpectedTimeoutHeader), v);
  }
  ::echo::v1::EchoRequest request;
  request.set_message("envoy");
  request.set_work_ms(work_ms);
  Reply reply;
  const absl::Time start = absl::Now();
  reply.status = stub->Echo(&cc, request, &reply.response);
  reply.took = absl::Now() - start;
  return reply;
}

int64_t ArrivalRemainingMs(const Reply& r) {
  return r.response.hops_size() > 0 ? r.response.hops(0).deadline_remaining_ms()
                                    : -2;
}

TEST(BehindEnvoyTest, EnvoysShorterTimeoutIsTheHandlersDeadline) {
  auto server = StartServer(true);
  ASSERT_NE(server, nullptr);
  Reply r = Call(*server, absl::Seconds(20), {"400"});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_LE(ArrivalRemainingMs(r), 400);
  EXPECT_GT(ArrivalRemainingMs(r), 0);
  // Never extended: grpc-timeout shorter than Envoy's. gRPC 1.51's client
  // encodes a timeout rounded up to its wire units, and its HPACK encoder may
  // re-send an earlier, up to 3% longer value on the same connection
  // (interceptors/internal/grpc_timeout.h): up to 2,060 ms arrive for 2 s
  // (2,009 ms seen on loaded cores), never Envoy's 60 s.
  r = Call(*server, absl::Seconds(2), {"60000"});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_LE(ArrivalRemainingMs(r), 2060);
  EXPECT_GT(ArrivalRemainingMs(r), 1000);
}

TEST(BehindEnvoyTest, EnvoysTimeoutEndsTheCallAsDeadlineExceeded) {
  auto server = StartServer(true);
  ASSERT_NE(server, nullptr);
  // 5 s of work, a 20 s grpc-timeout, Envoy's 300 ms: the handler's Context
  // ends at 300 ms (a reqctx timer: gRPC does not know Envoy's deadline).
  Reply r = Call(*server, absl::Seconds(20), {"300"}, /*work_ms=*/5000);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << r.status.error_message();
  EXPECT_GE(r.took, absl::Milliseconds(290));
  EXPECT_LT(r.took, absl::Milliseconds(300) + absl::Seconds(3));
  EXPECT_TRUE(server->stats().WaitUntil(IsIdle, kWaitBound));
}

TEST(BehindEnvoyTest, MalformedHeaderIsIgnoredAndCounted) {
  auto server = StartServer(true);
  ASSERT_NE(server, nullptr);
  const uint64_t before = Malformed();
  Reply r = Call(*server, absl::Seconds(20), {"300ms"});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_GT(ArrivalRemainingMs(r), 10000);
  EXPECT_EQ(Malformed() - before, 1u);
}

TEST(BehindEnvoyTest, WithoutTheOptionTheHeaderChangesNothing) {
  auto server = StartServer(false);
  ASSERT_NE(server, nullptr);
  const uint64_t before = Malformed();
  Reply r = Call(*server, absl::Seconds(20), {"300"});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_GT(ArrivalRemainingMs(r), 10000);
  r = Call(*server, absl::Seconds(20), {"bad"});
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_EQ(Malformed(), before);  // Not even read.
}

// Hostile values on the wire (raw HTTP/2: bytes gRPC's clients refuse to
// send): none fails the call or extends the deadline; each is counted; a
// valid value among them still applies.
TEST(BehindEnvoyTest, HostileHeadersOnTheWire) {
  auto server = StartServer(true);
  ASSERT_NE(server, nullptr);
  const std::string& address = server->address();
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port));
  std::vector<std::pair<std::string, std::string>> headers = {
      {"grpc-timeout", "20S"},
      {std::string(kEnvoyExpectedTimeoutHeader), "\x80\xff"},
      {std::string(kEnvoyExpectedTimeoutHeader), std::string("300\0", 4)},
      {std::string(kEnvoyExpectedTimeoutHeader), std::string(4000, '9')},
      {std::string(kEnvoyExpectedTimeoutHeader), "-1"},
  };
  for (int i = 0; i < 50; ++i) {
    headers.push_back({std::string(kEnvoyExpectedTimeoutHeader), "1e9"});
  }
  ::echo::v1::EchoRequest request;
  request.set_message("hostile");
  const uint64_t before = Malformed();
  RawCallResult r = RawUnaryCall(port, "/echo.v1.Echo/Echo",
                                 request.SerializeAsString(), headers,
                                 kWaitBound);
  ASSERT_TRUE(r.connected);
  ASSERT_EQ(r.grpc_status, 0) << "rst " << r.rst_stream_error.value_or(-1);
  ::echo::v1::EchoResponse response;
  ASSERT_TRUE(r.message.has_value() && response.ParseFromString(*r.message));
  ASSERT_EQ(response.hops_size(), 1);
  EXPECT_GT(response.hops(0).deadline_remaining_ms(), 10000);
  EXPECT_EQ(Malformed() - before, 54u);
  // A valid value among hostile ones applies.
  headers.push_back({std::string(kEnvoyExpectedTimeoutHeader), "500"});
  r = RawUnaryCall(port, "/echo.v1.Echo/Echo", request.SerializeAsString(),
                   headers, kWaitBound);
  ASSERT_EQ(r.grpc_status, 0);
  ASSERT_TRUE(r.message.has_value() && response.ParseFromString(*r.message));
  EXPECT_LE(response.hops(0).deadline_remaining_ms(), 500);
  EXPECT_TRUE(server->stats().WaitUntil(IsIdle, kWaitBound));
}

}  // namespace
}  // namespace reqctx::testing
