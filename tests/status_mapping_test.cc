// absl::Status <-> grpc::Status: codes one to one, messages kept.
#include <string>

#include "gtest/gtest.h"
#include "interceptors/status_mapping.h"

namespace reqctx {
namespace {

TEST(StatusMapping, EveryCodeMapsToItsNamesakeAndBack) {
  for (int code = 0; code <= 16; ++code) {
    auto absl_code = static_cast<absl::StatusCode>(code);
    auto grpc_code = static_cast<grpc::StatusCode>(code);
    std::string msg = "message " + std::to_string(code);
    grpc::Status g = ToGrpcStatus(absl::Status(absl_code, msg));
    EXPECT_EQ(g.error_code(), grpc_code) << code;
    absl::Status a = FromGrpcStatus(grpc::Status(grpc_code, msg));
    EXPECT_EQ(a.code(), absl_code) << code;
    if (code != 0) {  // OK carries no message in either library.
      EXPECT_EQ(g.error_message(), msg);
      EXPECT_EQ(a.message(), msg);
    }
    EXPECT_EQ(FromGrpcStatus(ToGrpcStatus(absl::Status(absl_code, msg))),
              absl::Status(absl_code, msg));
  }
}

TEST(StatusMapping, NamedExamples) {
  EXPECT_EQ(ToGrpcStatus(absl::DeadlineExceededError("late")).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_EQ(ToGrpcStatus(absl::CancelledError("gone")).error_code(),
            grpc::StatusCode::CANCELLED);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "x")),
            absl::UnauthenticatedError("x"));
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

// A peer can send any grpc-status number. 20 is unnamed but within
// grpc::StatusCode's value range (its enumerators need 5 bits), so the cast is
// defined behaviour (UBSan checks this).
TEST(StatusMapping, UnnamedCodesBecomeUnknownKeepingMessage) {
  absl::Status a = FromGrpcStatus(
      grpc::Status(static_cast<grpc::StatusCode>(20), "weird"));
  EXPECT_EQ(a.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(a.message(), "weird");
  grpc::Status g =
      ToGrpcStatus(absl::Status(static_cast<absl::StatusCode>(42), "odd"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(g.error_message(), "odd");
}

}  // namespace
}  // namespace reqctx
