// The glog integration: with InitGoogleLoggingWithContext, every line glog
// writes carries the call's fields inside a real intercepted gRPC call, and
// "-" outside any call, after glog's usual prefix.
#include "logging/glog.h"

#include <string>
#include <string_view>

#include "gtest/gtest.h"
#include "logging/log_test_util.h"

namespace reqctx::logging {
namespace {

using testing::HasCallFields;
using testing::HasNoCallFields;

// The line of `text` that contains `marker`, or "".
std::string LineWith(const std::string& text, std::string_view marker) {
  const size_t at = text.find(marker);
  if (at == std::string::npos) return "";
  const size_t begin = text.rfind('\n', at);
  const size_t start = begin == std::string::npos ? 0 : begin + 1;
  return text.substr(start, text.find('\n', at) - start);
}

class GlogTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    FLAGS_logtostderr = true;
    InitGoogleLoggingWithContext("glog_test");
  }
};

TEST_F(GlogTest, OutsideAnyCallTheFieldsAreDashes) {
  ::testing::internal::CaptureStderr();
  LOG(INFO) << "starting up";
  const std::string line =
      LineWith(::testing::internal::GetCapturedStderr(), "starting up");
  EXPECT_TRUE(HasNoCallFields(line));
  // glog's own prefix comes first: severity, date, time, thread, file:line.
  EXPECT_EQ(line.rfind("I", 0), 0u) << line;
  EXPECT_NE(line.find("glog_test.cc:"), std::string::npos) << line;
  EXPECT_NE(line.find("] trace_id=- span_id=- method=- budget_ms=none "
                      "starting up"),
            std::string::npos)
      << line;
}

TEST_F(GlogTest, InsideARealCallTheLineCarriesTheCall) {
  testing::SentCall sent;
  ::testing::internal::CaptureStderr();
  const absl::Status s = LogCall(
      [] { LOG(WARNING) << "in handler"; }, absl::Seconds(30), &sent);
  const std::string text = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(s.ok()) << s;
  const std::string line = LineWith(text, "in handler");
  EXPECT_TRUE(HasCallFields(line, sent));
  EXPECT_EQ(line.rfind("W", 0), 0u) << line;
}

}  // namespace
}  // namespace reqctx::logging
