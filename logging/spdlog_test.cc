// The spdlog integration: lines logged through a synchronous spdlog logger
// with %* carry the call's fields inside a real intercepted gRPC call, and
// "-" outside any call.
#include "logging/spdlog.h"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <memory>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "logging/log_test_util.h"

namespace reqctx::logging {
namespace {

using testing::HasCallFields;
using testing::HasNoCallFields;

struct CapturedLogger {
  CapturedLogger()
      : sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(out)),
        logger(std::make_shared<spdlog::logger>("test", sink)) {
    UseContextPattern(*logger);
  }
  std::string Text() {
    logger->flush();
    return out.str();
  }
  std::ostringstream out;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink;
  std::shared_ptr<spdlog::logger> logger;
};

TEST(SpdlogTest, OutsideAnyCallTheFieldsAreDashes) {
  CapturedLogger c;
  c.logger->info("starting up");
  const std::string text = c.Text();
  EXPECT_TRUE(HasNoCallFields(text));
  EXPECT_NE(text.find("[info] trace_id=- span_id=- method=- budget_ms=none "
                      "starting up\n"),
            std::string::npos)
      << text;
}

TEST(SpdlogTest, InsideARealCallTheLineCarriesTheCall) {
  CapturedLogger c;
  testing::SentCall sent;
  ASSERT_TRUE(LogCall([&] { c.logger->warn("in handler"); },
                      absl::Seconds(30), &sent)
                  .ok());
  const std::string text = c.Text();
  EXPECT_TRUE(HasCallFields(text, sent));
  EXPECT_NE(text.find("[warning] trace_id="), std::string::npos) << text;
  EXPECT_NE(text.find(" in handler\n"), std::string::npos) << text;
  // After the call, the same thread logs outside it again.
  c.out.str("");
  c.logger->info("after");
  EXPECT_TRUE(HasNoCallFields(c.Text()));
}

TEST(SpdlogTest, AFormatterOfYourOwnTakesTheFlag) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  sink->set_formatter(MakeContextFormatter("%v | %*"));
  spdlog::logger logger("custom", sink);
  logger.info("msg");
  logger.flush();
  EXPECT_EQ(out.str(), "msg | trace_id=- span_id=- method=- budget_ms=none\n");
}

}  // namespace
}  // namespace reqctx::logging
