// Streams under a server's deadline policy (issue 22, section 1): a stream
// whose caller set no deadline gets the policy's default deadline like a
// unary call, and -- although gRPC itself does not know that deadline -- a
// bound Read waiting on a silent client ends at it (the guard cancels the
// call), with DEADLINE_EXCEEDED on both sides; the load shedder holds the
// stream's concurrency slot until the stream ends, not until its Context
// is done.
#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/core.h"
#include "gtest/gtest.h"
#include "interceptors/debug.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/server_policy.h"
#include "streams/sync.h"
#include "tests/process_probe.h"
#include "tests/stream_test.grpc.pb.h"
#include "tests/test_timing.h"

namespace reqctx::streams {
namespace {

using ::reqctx::streamtest::Msg;
using ::reqctx::streamtest::StreamTest;
using ::reqctx::testing::PlainOrSanitized;

const absl::Duration kDefaultDeadline = PlainOrSanitized(
    absl::Milliseconds(300), absl::Milliseconds(900));
const absl::Duration kBound = absl::Seconds(30);

// Up: reads until the stream ends; reports what it saw.
class Service : public StreamTest::Service {
 public:
  grpc::Status Up(grpc::ServerContext* sc, grpc::ServerReader<Msg>* r,
                  Msg* resp) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      started_ = true;
      cv_.notify_all();
    }
    ServerStream stream(sc, r, StreamOptions{});
    const bool had_deadline = stream.context().Deadline().has_value();
    Msg m;
    int n = 0;
    while (stream.Read(&m)) ++n;
    resp->set_count(n);
    grpc::Status s = stream.Finish(grpc::Status::OK);
    std::lock_guard<std::mutex> lock(mu_);
    result_ = s;
    had_deadline_ = had_deadline;
    cv_.notify_all();
    return s;
  }
  bool WaitStarted() {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoSeconds(kBound),
                        [&] { return started_; });
  }
  std::optional<grpc::Status> Result(bool* had_deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, absl::ToChronoSeconds(kBound),
                 [&] { return result_.has_value(); });
    *had_deadline = had_deadline_;
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<grpc::Status> result_;
  bool had_deadline_ = false;
  bool started_ = false;
};

TEST(StreamsPolicyTest, DefaultDeadlineEndsAStreamWithoutOne) {
  policy::ServerPolicyOptions options;
  options.defaults.default_deadline = kDefaultDeadline;
  options.defaults.max_concurrency = 1;
  options.defaults.max_queue = 0;
  policy::ServerPolicy server_policy(options);
  Service service;
  ASSERT_TRUE(server_policy.Apply(&service).ok());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service);
  server_policy.InstallInterceptors(builder);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = StreamTest::NewStub(reqctx::CreateChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));

  {
    // No deadline on the client: it writes one message, then goes silent.
    Msg resp;
    ClientStream up(Background(), StreamOptions{},
                    [&](grpc::ClientContext* cc) {
                      return stub->Up(cc, &resp);
                    });
    ASSERT_TRUE(up.Write(Msg()));
    ASSERT_TRUE(service.WaitStarted());  // Admitted: it holds the slot.
    // While the stream runs it holds the only slot: a second call is shed.
    {
      Msg resp2;
      grpc::ClientContext cc2;
      cc2.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(5));
      auto second = stub->Up(&cc2, &resp2);
      second->WritesDone();
      grpc::Status s2 = second->Finish();
      EXPECT_EQ(s2.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << s2.error_message();
    }
    const absl::Time start = absl::Now();
    bool had_deadline = false;
    std::optional<grpc::Status> r = service.Result(&had_deadline);
    ASSERT_TRUE(r.has_value()) << "the handler's Read never ended";
    EXPECT_TRUE(had_deadline);
    EXPECT_EQ(r->error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << r->error_message();
    EXPECT_LT(absl::Now() - start, kDefaultDeadline + absl::Seconds(5));
    grpc::Status s = up.Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << s.error_message();
  }
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  EXPECT_TRUE(testing::Eventually(
      [] {
        return StreamGuard::LiveForTesting() == 0 &&
               debug::LiveServerCallCount() == 0;
      },
      kBound));
}

}  // namespace
}  // namespace reqctx::streams
