// //ledger:grpc_ledger over a real gRPC call on loopback: a failed call's
// ledger reaches the client in grpc-status-details-bin and decodes from the
// Status and from the trailers; a full-size ledger with a long message stays
// within gRPC's default metadata limit; details the handler set are never
// replaced unless they are a google.rpc.Status; garbled details are rejected
// cleanly by the decoder.
#include "ledger/grpc_ledger.h"

#include <memory>
#include <string>

#include "proto/echo.grpc.pb.h"
#include "google/rpc/status.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace reqctx {
namespace {

// A chain of `n` hops named hop-0.., the last one failing, `fan` calls each.
Ledger Chain(int n, int fan) {
  LedgerHop hop;
  for (int i = n - 1; i >= 0; --i) {
    LedgerHop h;
    h.method = "/echo.v1.Echo/Echo";
    h.host = "hop-" + std::to_string(i);
    h.budget = absl::Milliseconds(1000 - 10 * i);
    h.work = absl::Microseconds(5000 + i);
    h.code = 4;
    h.cause = CauseKind::kCallerDeadline;
    for (int f = 0; f < fan; ++f) {
      LedgerOutbound o;
      o.method = "/echo.v1.Echo/Echo" + std::to_string(f);
      o.took = absl::Milliseconds(f);
      h.outbound.push_back(o);
    }
    if (i < n - 1) {
      LedgerOutbound o;
      o.method = "/echo.v1.Echo/Echo";
      o.took = absl::Milliseconds(990 - 10 * i);
      o.code = 4;
      o.ledger.push_back(std::move(hop));
      h.outbound.push_back(std::move(o));
    }
    hop = std::move(h);
  }
  Ledger l;
  l.root = std::move(hop);
  return l;
}

// Echo answers with the status its request's message names.
class StatusService final : public echo::v1::Echo::Service {
 public:
  grpc::Status Echo(grpc::ServerContext*, const echo::v1::EchoRequest* req,
                    echo::v1::EchoResponse*) override {
    const std::string& m = req->message();
    grpc::Status failed(grpc::StatusCode::DEADLINE_EXCEEDED,
                        "deadline exceeded");
    if (m == "chain20") return WithLedger(failed, Chain(20, 0));
    if (m == "full") {
      // The largest ledger the cap allows, with the longest message.
      grpc::Status longmsg(grpc::StatusCode::DEADLINE_EXCEEDED,
                           std::string(1024, 'm'));
      return WithLedger(longmsg, Chain(40, 6));
    }
    if (m == "foreign") {
      return WithLedger(grpc::Status(grpc::StatusCode::UNAVAILABLE, "mine",
                                     "not a google.rpc.Status \xff"),
                        Chain(2, 0));
    }
    if (m == "garbled") {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "x",
                          std::string("\x1a\x05\x0a\x03" "abc\xff\xff", 9));
    }
    if (m == "huge") {
      // A hostile peer: a well-formed google.rpc.Status with a ledger, past
      // the decoder's limit (the test's client accepts 64 KiB of metadata).
      google::rpc::Status st;
      st.set_code(4);
      st.set_message(std::string(kLedgerDecodeLimit, 'x'));
      google::rpc::Status ours;
      ours.ParseFromString(EncodeLedgerStatus(4, "m", Chain(2, 0)));
      *st.add_details() = ours.details(0);
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "x",
                          st.SerializeAsString());
    }
    if (m == "ok") return WithLedger(grpc::Status::OK, Chain(2, 0));
    return failed;
  }
};

class LedgerGrpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_MAX_METADATA_SIZE, 64 * 1024);
    stub_ = echo::v1::Echo::NewStub(grpc::CreateCustomChannel(
        "127.0.0.1:" + std::to_string(port_),
        grpc::InsecureChannelCredentials(), args));
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
  }

  // Calls Echo(message) with a bounded deadline; `ctx` is for the trailers.
  grpc::Status Call(const std::string& message, grpc::ClientContext& ctx) {
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    echo::v1::EchoRequest req;
    req.set_message(message);
    echo::v1::EchoResponse resp;
    return stub_->Echo(&ctx, req, &resp);
  }

  StatusService service_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<echo::v1::Echo::Stub> stub_;
};

TEST_F(LedgerGrpcTest, TwentyHopLedgerReachesTheClient) {
  grpc::ClientContext ctx;
  grpc::Status s = Call("chain20", ctx);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  absl::StatusOr<Ledger> l = LedgerFromStatus(s);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->summarised_hops, 0u);
  EXPECT_EQ(l->root.host, "hop-0");
  absl::StatusOr<Ledger> t = LedgerFromTrailers(ctx);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(LedgerLine(*t), LedgerLine(*l));
  EXPECT_EQ(LedgerLineOf(s), LedgerLine(*l));
  EXPECT_NE(LedgerLineOf(s).find("hop-19 (810 ms left)"), std::string::npos)
      << LedgerLineOf(s);
}

TEST_F(LedgerGrpcTest, FullSizeLedgerFitsGrpcsDefaultLimit) {
  grpc::ClientContext ctx;
  grpc::Status s = Call("full", ctx);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << s.error_message();
  EXPECT_EQ(s.error_message(), std::string(1024, 'm'));
  EXPECT_GT(s.error_details().size(), kLedgerDetailsCap - 512);
  EXPECT_LE(s.error_details().size(), kLedgerDetailsCap);
  absl::StatusOr<Ledger> l = LedgerFromStatus(s);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_GT(l->summarised_hops, 0u);
}

TEST_F(LedgerGrpcTest, ForeignDetailsAreNeverReplaced) {
  grpc::ClientContext ctx;
  grpc::Status s = Call("foreign", ctx);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(s.error_details(), "not a google.rpc.Status \xff");
  EXPECT_EQ(LedgerFromStatus(s).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LedgerLineOf(s), "");
}

TEST_F(LedgerGrpcTest, GarbledHugeAndAbsentDetailsDecodeCleanly) {
  {
    grpc::ClientContext ctx;
    grpc::Status s = Call("garbled", ctx);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_EQ(LedgerFromStatus(s).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(LedgerFromTrailers(ctx).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    grpc::ClientContext ctx;
    grpc::Status s = Call("huge", ctx);
    ASSERT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << s.error_message();
    EXPECT_GT(s.error_details().size(), kLedgerDecodeLimit);
    EXPECT_EQ(LedgerFromStatus(s).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(LedgerFromTrailers(ctx).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  {
    grpc::ClientContext ctx;
    grpc::Status s = Call("plain", ctx);
    EXPECT_EQ(LedgerFromStatus(s).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(LedgerFromTrailers(ctx).status().code(),
              absl::StatusCode::kNotFound);
  }
  {
    grpc::ClientContext ctx;
    grpc::Status s = Call("ok", ctx);
    EXPECT_TRUE(s.ok());
    EXPECT_EQ(LedgerFromTrailers(ctx).status().code(),
              absl::StatusCode::kNotFound);
  }
}

}  // namespace
}  // namespace reqctx
