// Python grpcio peers (tests/python_stream_peer.py, Debian python3-grpcio)
// against the echo server binary (issue 22, section 3): a client that stalls
// mid-stream (Chat and Collect) is cut at --stream_message_wait_ms, and one
// that never reads (large Chat messages until flow control is full on every
// hop) at --stream_idle_ms, each with the documented status naming the
// timeout; the server's call count returns to zero. Skipped, with one line,
// when /usr/bin/python3 cannot import grpc.
#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "proto/echo.grpc.pb.h"
#include "tests/child_process.h"
#include "tests/echo_chain.h"
#include "tests/process_probe.h"
#include "tests/server_process.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using testing::ChildProcess;
using testing::Eventually;
using testing::kWaitBound;
using testing::ServerProcess;

constexpr absl::Duration kTimeout =
    testing::PlainOrSanitized(absl::Milliseconds(400), absl::Seconds(1));
// How late past its timeout a cut may come on a loaded machine.
constexpr absl::Duration kLate =
    testing::PlainOrSanitized(absl::Seconds(2), absl::Seconds(8));

std::string Ms(absl::Duration d) {
  return std::to_string(absl::ToInt64Milliseconds(d));
}

// What the peer printed: "status CODE after MS ms: DETAILS (...)".
struct PeerResult {
  std::string code;
  absl::Duration took;
  std::string details;
};

PeerResult ParsePeer(const std::string& output) {
  PeerResult r;
  const size_t at = output.find("status ");
  if (at == std::string::npos) return r;
  const std::string line = output.substr(at, output.find('\n', at) - at);
  const size_t after = line.find(" after ");
  const size_t ms_end = line.find(" ms: ");
  if (after == std::string::npos || ms_end == std::string::npos) return r;
  r.code = line.substr(7, after - 7);
  int64_t ms = -1;
  if (absl::SimpleAtoi(line.substr(after + 7, ms_end - after - 7), &ms)) {
    r.took = absl::Milliseconds(ms);
  }
  r.details = line.substr(ms_end + 5);
  return r;
}

class PythonStreamPeerTest : public ::testing::Test {
 protected:
  // Starts the echo server with `flags`.
  void StartServer(const std::vector<std::string>& flags) {
    ASSERT_TRUE(server_.Start(flags)) << server_.output();
    stub_ = ::echo::v1::Echo::NewStub(reqctx::CreateChannel(
        server_.address(), grpc::InsecureChannelCredentials()));
  }

  // Starts the peer with `args`; false (and GTEST_SKIP set by the caller)
  // if python3's grpc is missing.
  void StartPeer(const std::vector<std::string>& args) {
    const char* srcdir = std::getenv("TEST_SRCDIR");
    const char* workspace = std::getenv("TEST_WORKSPACE");
    ASSERT_TRUE(srcdir != nullptr && workspace != nullptr);
    const std::string dir = testing::MakeTempDir("python_stream_peer");
    ASSERT_FALSE(dir.empty());
    std::vector<std::string> argv = {
        "/usr/bin/python3",
        absl::StrCat(srcdir, "/", workspace, "/tests/python_stream_peer.py"),
        "--target=" + server_.address(), "--bound_s=60"};
    argv.insert(argv.end(), args.begin(), args.end());
    ASSERT_TRUE(peer_.Start(argv, dir + "/peer.log"));
  }

  // Waits for the peer's status line (or its skip line); false on skip.
  bool WaitPeerStatus(PeerResult* result) {
    const bool got = peer_.WaitForOutput("status ", kWaitBound);
    if (!got && peer_.Output().find("skip:") != std::string::npos) {
      return false;
    }
    EXPECT_TRUE(got) << peer_.Output();
    *result = ParsePeer(peer_.Output());
    return true;
  }

  // The server counted exactly one call, ended as deadline-exceeded (a
  // timeout's status), and serves nothing now.
  void ExpectServerIdleAfterOneCut() {
    ::echo::v1::StatsResponse stats;
    EXPECT_TRUE(Eventually([&] {
      grpc::ClientContext cc;
      return stub_->Stats(&cc, ::echo::v1::StatsRequest(), &stats).ok() &&
             stats.active_requests() == 0 && stats.active_workers() == 0 &&
             stats.deadline_exceeded_total() + stats.canceled_total() +
                     stats.completed_total() ==
                 1;
    })) << stats.DebugString();
    EXPECT_EQ(stats.deadline_exceeded_total(), 1) << stats.DebugString();
  }

  // The status of a stream the server cut with `timeout`: DEADLINE_EXCEEDED
  // (streams/stream_guard.h) with the timeout's message.
  static void ExpectCutBy(const PeerResult& r, const std::string& timeout) {
    EXPECT_EQ(r.code, "DEADLINE_EXCEEDED") << r.details;
    EXPECT_NE(r.details.find("reqctx stream " + timeout + " timeout"),
              std::string::npos)
        << r.details;
  }

  ServerProcess server_;
  ChildProcess peer_;
  std::unique_ptr<::echo::v1::Echo::Stub> stub_;
};

TEST_F(PythonStreamPeerTest, StalledChatCutAtMessageWait) {
  StartServer({"--stream_message_wait_ms=" + Ms(kTimeout)});
  StartPeer({"--mode=stall", "--method=Chat", "--messages=2"});
  PeerResult r;
  if (!WaitPeerStatus(&r)) GTEST_SKIP() << "python3 grpc is not importable";
  ExpectCutBy(r, "message-wait");
  EXPECT_NE(r.details.find("after 2 messages received, 2 sent"),
            std::string::npos)
      << r.details;
  // The peer's time includes its exchanges before the stall.
  EXPECT_GE(r.took, kTimeout);
  EXPECT_LT(r.took, kTimeout + kLate);
  ExpectServerIdleAfterOneCut();
}

TEST_F(PythonStreamPeerTest, StalledCollectCutAtMessageWait) {
  // Per method: Chat's timeouts do not apply to Collect.
  StartServer({"--stream_timeouts=Collect=" + Ms(kTimeout) + "/0,Chat=0/0"});
  StartPeer({"--mode=stall", "--method=Collect", "--messages=3"});
  PeerResult r;
  if (!WaitPeerStatus(&r)) GTEST_SKIP() << "python3 grpc is not importable";
  ExpectCutBy(r, "message-wait");
  EXPECT_NE(r.details.find("after 3 messages received, 0 sent"),
            std::string::npos)
      << r.details;
  EXPECT_GE(r.took, kTimeout);
  EXPECT_LT(r.took, kTimeout + kLate);
  ExpectServerIdleAfterOneCut();
}

TEST_F(PythonStreamPeerTest, ChatPeerThatNeverReadsCutAtIdle) {
  StartServer({"--stream_idle_ms=" + Ms(kTimeout)});
  StartPeer({"--mode=noread", "--message_bytes=262144", "--max_mb=64"});
  if (!peer_.WaitForOutput("flooding", kWaitBound)) {
    if (peer_.Output().find("skip:") != std::string::npos) {
      GTEST_SKIP() << "python3 grpc is not importable";
    }
    FAIL() << peer_.Output();
  }
  // The server ends the call while the peer still reads nothing.
  ExpectServerIdleAfterOneCut();
  ASSERT_EQ(kill(peer_.pid(), SIGUSR1), 0);  // Now read, and report.
  PeerResult r;
  ASSERT_TRUE(WaitPeerStatus(&r));
  ExpectCutBy(r, "idle");
  // Flow control stopped the server's reads long before the peer's 64 MB.
  EXPECT_EQ(r.details.find("after 256 messages received"), std::string::npos)
      << r.details;
}

}  // namespace
}  // namespace reqctx
