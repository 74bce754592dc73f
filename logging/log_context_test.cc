// The fields themselves: their format in and out of a Context, the method
// rule's sanitizing and bound, the budget once the deadline has passed.
#include "logging/log_context.h"

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "context/current.h"
#include "gtest/gtest.h"
#include "logging/log_test_util.h"
#include "w3c/trace_context.h"

namespace reqctx::logging {
namespace {

std::string FieldsOf(const Context& ctx) {
  std::string out;
  AppendLogFields(ctx, &out);
  return out;
}

TEST(LogContextTest, BackgroundHasNoFields) {
  EXPECT_EQ(FieldsOf(Background()),
            "trace_id=- span_id=- method=- budget_ms=none");
  EXPECT_EQ(CurrentLogFields(), FieldsOf(Background()));
}

TEST(LogContextTest, CurrentContextsFieldsInOrder) {
  Context ctx = WithLogMethod(
      WithTraceContext(Background(), {std::string(32, 'a'),
                                      std::string(16, 'b'), true}),
      "/pkg.Svc/M");
  auto [timed, cancel] = WithTimeout(ctx, absl::Hours(1));
  ScopedContext scope(timed);
  const auto f = testing::ParseFields(CurrentLogFields());
  ASSERT_EQ(f.size(), 4u) << CurrentLogFields();
  EXPECT_EQ(f.at("trace_id"), std::string(32, 'a'));
  EXPECT_EQ(f.at("span_id"), std::string(16, 'b'));
  EXPECT_EQ(f.at("method"), "/pkg.Svc/M");
  int64_t ms = 0;
  ASSERT_TRUE(absl::SimpleAtoi(f.at("budget_ms"), &ms));
  EXPECT_GT(ms, 3500 * 1000);
  EXPECT_LE(ms, 3600 * 1000);
}

TEST(LogContextTest, PassedDeadlineLogsZero) {
  auto [ctx, cancel] = WithTimeout(Background(), -absl::Seconds(1));
  EXPECT_EQ(FieldsOf(ctx), "trace_id=- span_id=- method=- budget_ms=0");
}

TEST(LogContextTest, HostileMethodNamesStayOneBoundedToken) {
  EXPECT_EQ(LogMethodOf(WithLogMethod(Background(), "/a b\n/c=d\x7f")),
            "/a?b?/c=d?");
  const std::string huge(10000, 'x');
  EXPECT_EQ(LogMethodOf(WithLogMethod(Background(), huge)).size(),
            kMaxLogMethodBytes);
  EXPECT_EQ(LogMethodOf(Background()), "");
}

// WithTraceContext does not validate (a caller may set any id): the ids
// are logged as the method is, one bounded token of printable ASCII, so an
// id with a newline, a space or a quote cannot forge a line or a field.
TEST(LogContextTest, HostileTraceIdsStayOneBoundedToken) {
  Context ctx = WithTraceContext(
      Background(),
      {"abc\ntrace_id=forged span_id=\"x", "s p\r\x01\xff", true});
  EXPECT_EQ(FieldsOf(ctx),
            "trace_id=abc?trace_id=forged?span_id=\"x span_id=s?p??? "
            "method=- budget_ms=none");
  // A TraceContext holds at most 32 / 16 characters per id (HexId), fewer
  // than the log's own bound, kMaxLogIdBytes.
  Context huge = WithTraceContext(Background(),
                                  {std::string(200, 'a'),
                                   std::string(200, 'b'), true});
  const auto f = testing::ParseFields(FieldsOf(huge));
  static_assert(TraceId::kMaxSize <= kMaxLogIdBytes);
  EXPECT_EQ(f.at("trace_id"), std::string(32, 'a'));
  EXPECT_EQ(f.at("span_id"), std::string(16, 'b'));
}

TEST(LogContextTest, DistinctMethodNamesAreBounded) {
  // Fills the process's table: in a child process (re-executed, as gRPC's
  // threads may run), so the other tests keep theirs.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        for (size_t i = 0; i < kMaxLogMethods + 10; ++i) {
          (void)WithLogMethod(Background(), absl::StrCat("/svc/m", i));
        }
        const bool full =
            LogMethodOf(WithLogMethod(Background(), "/never/seen")) ==
            "(other)";
        // Names interned before the table filled are still themselves.
        const bool kept =
            LogMethodOf(WithLogMethod(Background(), "/svc/m3")) == "/svc/m3";
        std::exit(full && kept ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST(LogContextTest, ThreadsInterningAtOnceAgree) {
  constexpr int kThreads = 4;
  constexpr int kRounds = 2000;
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, &wrong] {
      for (int i = 0; i < kRounds; ++i) {
        // Two names per thread, alternating (misses the per-thread cache),
        // one of them shared by all threads.
        const std::string mine = absl::StrCat("/t", t, "/m");
        const std::string name = i % 2 == 0 ? mine : "/shared/m";
        if (LogMethodOf(WithLogMethod(Background(), name)) != name) {
          wrong.fetch_add(1);
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(LogContextTest, RuleComposesWithAnEarlierValuesStep) {
  ServerCallRules rules;
  static constexpr Key<int> kMark("mark");
  rules.values = [](std::string_view, const Context& ctx, const auto&,
                    const grpc::ServerContextBase&) {
    return WithValue(ctx, kMark, 7);
  };
  ServerCallRules both = WithLogMethodRule(std::move(rules));
  grpc::ServerContext sc;
  const std::multimap<grpc::string_ref, grpc::string_ref> md;
  Context c = both.values("/x.Y/Z", Background(), md, sc);
  EXPECT_EQ(LogMethodOf(c), "/x.Y/Z");
  ASSERT_NE(c.Value(kMark), nullptr);
  EXPECT_EQ(*c.Value(kMark), 7);
}

TEST(LogContextTest, InsideARealCallWithoutALoggingLibrary) {
  std::string line;
  testing::SentCall sent;
  ASSERT_TRUE(testing::LogCall([&] { line = CurrentLogFields(); },
                               absl::Seconds(30), &sent)
                  .ok());
  EXPECT_TRUE(testing::HasCallFields(line, sent));
}

}  // namespace
}  // namespace reqctx::logging
