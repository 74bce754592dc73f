// //integrations/postgres against a real PostgreSQL 15 started by the test
// (LocalServer: initdb into /tmp, 127.0.0.1, a free port, stopped by pid).
#include "integrations/postgres/postgres.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "integrations/postgres/local_server.h"
#include "tests/test_timing.h"

namespace reqctx::postgres {
namespace {

constexpr int kScale = testing::PlainOrSanitized(1, 5);
constexpr absl::Duration kSlack = testing::PlainOrSanitized(
    absl::Milliseconds(50), absl::Milliseconds(250));

// One server for the whole binary.
class PostgresEnv : public ::testing::Environment {
 public:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<LocalServer>> s = LocalServer::Start();
    if (s.ok()) {
      server = std::move(*s);
    } else {
      start_error = s.status();
    }
  }
  void TearDown() override { server.reset(); }
  static inline std::unique_ptr<LocalServer> server;
  static inline absl::Status start_error;
};

class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (PostgresEnv::server == nullptr) {
      const absl::Status& e = PostgresEnv::start_error;
      if (e.code() == absl::StatusCode::kFailedPrecondition) {
        GTEST_SKIP() << "no PostgreSQL on this machine: " << e.message();
      }
      FAIL() << "PostgreSQL did not start: " << e;
    }
    admin_ = Open();
    ASSERT_NE(admin_, nullptr);
  }

  static std::unique_ptr<Connection> Open() {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
    absl::StatusOr<std::unique_ptr<Connection>> c =
        Connection::Connect(ctx, PostgresEnv::server->conninfo());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? std::move(*c) : nullptr;
  }

  // Active queries of backend `pid` (0: of every backend but admin's).
  int64_t ActiveQueries(int pid) {
    absl::StatusOr<Result> r = admin_->Query(
        Background(),
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
        "pid <> pg_backend_pid() AND backend_type = 'client backend' AND "
        "($1::int = 0 OR pid = $1::int)",
        {std::to_string(pid)});
    EXPECT_TRUE(r.ok()) << r.status();
    int64_t n = -1;
    if (r.ok() && r->at(0, 0)) {
      EXPECT_TRUE(absl::SimpleAtoi(*r->at(0, 0), &n));
    }
    return n;
  }

  // Waits (bounded) until backend `pid` runs a query.
  bool AwaitActive(int pid) {
    const absl::Time end = absl::Now() + absl::Seconds(10);
    while (absl::Now() < end) {
      if (ActiveQueries(pid) == 1) return true;
      // The server publishes no event for this: ask again shortly.
      absl::SleepFor(absl::Milliseconds(2));
    }
    return false;
  }

  static void ExpectUsable(Connection& c) {
    absl::StatusOr<Result> r = c.Query(Background(), "SELECT 41 + 1");
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->rows(), 1u);
    EXPECT_EQ(r->at(0, 0), std::optional<std::string>("42"));
  }

  std::unique_ptr<Connection> admin_;
};

TEST_F(PostgresTest, RowsParamsNullsAndCounts) {
  auto conn = Open();
  absl::StatusOr<Result> r = conn->Query(
      Background(), "SELECT $1::int + 1 AS n, $2::text AS t, NULL::int AS z",
      {"41", std::nullopt});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->rows(), 1u);
  EXPECT_EQ(r->column_names(), (std::vector<std::string>{"n", "t", "z"}));
  EXPECT_EQ(r->at(0, 0), std::optional<std::string>("42"));
  EXPECT_EQ(r->at(0, 1), std::nullopt);
  EXPECT_EQ(r->at(0, 2), std::nullopt);
  EXPECT_EQ(r->at(5, 5), std::nullopt);  // Out of range: no crash.
  ASSERT_TRUE(conn->Query(Background(), "CREATE TEMP TABLE t (k int PRIMARY KEY)").ok());
  r = conn->Query(Background(), "INSERT INTO t SELECT generate_series(1, 5)");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->affected_rows(), 5);
  r = conn->Query(Background(), "SELECT k FROM t ORDER BY k");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rows(), 5u);
  EXPECT_EQ(r->at(4, 0), std::optional<std::string>("5"));
}

TEST_F(PostgresTest, CancelStopsTheQueryOnTheServerFast) {
  auto conn = Open();
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<Result> r;
  std::atomic<int64_t> returned_ns{0};
  std::thread q([&, c = ctx] {
    r = conn->Query(c, "SELECT pg_sleep(10)");
    returned_ns = absl::GetCurrentTimeNanos();
  });
  ASSERT_TRUE(AwaitActive(conn->backend_pid()));
  const int64_t cancel_ns = absl::GetCurrentTimeNanos();
  cancel();
  q.join();
  const absl::Duration took = absl::Nanoseconds(returned_ns - cancel_ns);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  EXPECT_LT(took, kSlack);
  EXPECT_EQ(ActiveQueries(conn->backend_pid()), 0);  // Gone on the server.
  EXPECT_TRUE(conn->ok());
  ExpectUsable(*conn);
  std::printf("cancel -> Query returned, query stopped on the server: %s\n",
              absl::FormatDuration(took).c_str());
}

TEST_F(PostgresTest, DeadlineStopsTheQuery) {
  auto conn = Open();
  const absl::Time start = absl::Now();
  auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(100));
  absl::StatusOr<Result> r = conn->Query(ctx, "SELECT pg_sleep(10)");
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded)
      << r.status();
  EXPECT_GE(took, absl::Milliseconds(95));
  EXPECT_LT(took, absl::Milliseconds(100) + kSlack);
  EXPECT_EQ(ActiveQueries(conn->backend_pid()), 0);
  ExpectUsable(*conn);  // The same connection runs the next query.
  std::printf("100 ms deadline on pg_sleep(10): returned after %s\n",
              absl::FormatDuration(took).c_str());
}

TEST_F(PostgresTest, DeadlineIsAlsoSetOnTheServerForThatQueryOnly) {
  auto conn = Open();
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(5));
  absl::StatusOr<Result> r = conn->Query(
      ctx, "SELECT current_setting('statement_timeout')::interval "
           "BETWEEN '4 s' AND '5.1 s'");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->at(0, 0), std::optional<std::string>("t"));
  // Local to that query's transaction: the next one has no limit.
  r = conn->Query(Background(), "SHOW statement_timeout");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->at(0, 0), std::optional<std::string>("0"));
}

TEST_F(PostgresTest, SqlErrorsAreNotCancellation) {
  auto conn = Open();
  absl::StatusOr<Result> r = conn->Query(Background(), "SELEC 1");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlState(r.status()), std::optional<std::string>("42601"));
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  r = conn->Query(ctx, "SELECT 1 / 0");  // Pipelined (has a deadline).
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SqlState(r.status()), std::optional<std::string>("22012"));
  ASSERT_TRUE(conn->Query(Background(), "CREATE TEMP TABLE u (k int PRIMARY KEY)").ok());
  ASSERT_TRUE(conn->Query(ctx, "INSERT INTO u VALUES (1)").ok());
  r = conn->Query(ctx, "INSERT INTO u VALUES (1)");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists);
  // Someone else cancels the statement: kAborted with 57014, not kCancelled.
  std::thread q([&] { r = conn->Query(ctx, "SELECT pg_sleep(10)"); });
  ASSERT_TRUE(AwaitActive(conn->backend_pid()));
  ASSERT_TRUE(admin_->Query(Background(), "SELECT pg_cancel_backend($1::int)",
                            {std::to_string(conn->backend_pid())}).ok());
  q.join();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
  EXPECT_EQ(SqlState(r.status()), std::optional<std::string>("57014"));
  EXPECT_EQ(SqlState(absl::CancelledError()), std::nullopt);
  ExpectUsable(*conn);
}

TEST_F(PostgresTest, DoneContextSendsNothingAndBadInputIsRefused) {
  auto conn = Open();
  auto [ctx, cancel] = WithCancel(Background());
  cancel();
  EXPECT_EQ(conn->Query(ctx, "SELECT 1").status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(conn->Query(Background(), "SELECT $1::text", {std::string("a\0b", 3)})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(conn->Query(Background(), "COPY (SELECT 1) TO STDOUT").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(conn->ok());  // COPY gives the connection up, safely.
  EXPECT_EQ(conn->Query(Background(), "SELECT 1").status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(Connection::Connect(ctx, PostgresEnv::server->conninfo())
                .status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(Connection::Connect(Background(), "host=127.0.0.1 port=1 user=x")
                .status().code(),
            absl::StatusCode::kUnavailable);
}

// Random cancels and deadlines, landing anywhere (before the send, while it
// runs, after it finished), on a pool of connections used from several
// threads: every call ends OK or with its Context's error, and afterwards
// every connection is usable and nothing runs on the server.
TEST_F(PostgresTest, RandomCancelsLeaveEveryConnectionUsable) {
  constexpr int kConns = 4;
  const int total = 1000 / kScale;
  std::vector<std::unique_ptr<Connection>> pool;
  for (int i = 0; i < kConns; ++i) pool.push_back(Open());
  std::atomic<int> next{0}, ok{0}, canceled{0}, deadline{0}, other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kConns; ++t) {
    threads.emplace_back([&, t] {
      absl::BitGen rng;
      Connection& c = *pool[t];
      while (next.fetch_add(1) < total) {
        const absl::Duration sleep = absl::Microseconds(absl::Uniform(rng, 0, 20000));
        const absl::Duration when = absl::Microseconds(absl::Uniform(rng, 0, 15000));
        absl::StatusOr<Result> r;
        const std::string sql = absl::StrCat(
            "SELECT pg_sleep(", absl::ToDoubleSeconds(sleep), ")");
        if (absl::Bernoulli(rng, 0.5)) {
          auto [ctx, cancel] = WithTimeout(Background(), when);
          r = c.Query(ctx, sql);
        } else {
          // Canceled from another thread (an AfterFunc) at a random time.
          auto [ctx, cancel] = WithCancel(Background());
          auto [timer, stop_timer] = WithTimeout(Background(), when);
          AfterFuncHandle h = AfterFunc(timer, [cancel = cancel] { cancel(); });
          r = c.Query(ctx, sql);
        }
        switch (r.status().code()) {
          case absl::StatusCode::kOk: ++ok; break;
          case absl::StatusCode::kCancelled: ++canceled; break;
          case absl::StatusCode::kDeadlineExceeded: ++deadline; break;
          default:
            ++other;
            ADD_FAILURE() << r.status();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(canceled.load(), 0);
  EXPECT_GT(deadline.load(), 0);
  for (auto& c : pool) {
    EXPECT_TRUE(c->ok());
    ExpectUsable(*c);
  }
  EXPECT_EQ(ActiveQueries(0), 0);
  std::printf("%d queries: %d ok, %d canceled, %d deadline exceeded\n", total,
              ok.load(), canceled.load(), deadline.load());
}

// Pool: threads share connections; canceled queries leave their connection
// reusable (it goes back to the pool) and nothing running on the server.
TEST_F(PostgresTest, PoolSharesConnectionsAcrossCancels) {
  Pool pool(PostgresEnv::server->conninfo(), /*max_idle=*/3);
  std::atomic<int> other{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      absl::BitGen rng;
      for (int i = 0; i < 100 / kScale; ++i) {
        auto [ctx, cancel] = WithTimeout(
            Background(), absl::Microseconds(absl::Uniform(rng, 0, 10000)));
        absl::StatusOr<Result> r = pool.Query(ctx, "SELECT pg_sleep(0.005)");
        const absl::StatusCode c = r.status().code();
        if (c != absl::StatusCode::kOk &&
            c != absl::StatusCode::kDeadlineExceeded) {
          ++other;
          ADD_FAILURE() << r.status();
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(other.load(), 0);
  absl::StatusOr<Result> r = pool.Query(Background(), "SELECT 1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(ActiveQueries(0), 0);
}

}  // namespace
}  // namespace reqctx::postgres

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new reqctx::postgres::PostgresEnv());
  return RUN_ALL_TESTS();
}
