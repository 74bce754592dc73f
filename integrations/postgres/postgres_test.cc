// //integrations/postgres against a real PostgreSQL 15 started by the test
// (LocalServer: initdb into /tmp, 127.0.0.1, a free port, stopped by pid).
#include "integrations/postgres/postgres.h"

#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <memory>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/after_func.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "integrations/postgres/local_server.h"
#include "tests/test_timing.h"

namespace reqctx::postgres {
namespace {

constexpr int kScale = testing::PlainOrSanitized(1, 5);
// A cancel request is a new connection the server forks a process for: on
// the loaded 2-core CI machine that alone took 40-60 ms.
constexpr absl::Duration kSlack = testing::PlainOrSanitized(
    absl::Milliseconds(100), absl::Milliseconds(250));

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
  absl::StatusOr<std::unique_ptr<Pool>> p =
      Pool::New(PostgresEnv::server->conninfo(), {.max_open = 3, .max_idle = 3});
  ASSERT_TRUE(p.ok()) << p.status();
  Pool& pool = **p;
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
  // Waiters that gave up left nothing behind.
  const Pool::Counts c = pool.Stats();
  EXPECT_EQ(c.waiting, 0u);
  EXPECT_LE(c.open, 3u);
  EXPECT_LE(c.peak_open, 3u);
}


// B8: once the Context is done, the result is what the server did. Several
// hundred autocommitted INSERTs that each take ~20 ms, with deadlines (or
// cancels from another thread) landing around that time: every call that
// returned OK has its row, none that returned the Context's error has one;
// "outcome unknown" may go either way (counted, expected rare).
TEST_F(PostgresTest, ResultIsWhatTheServerDidWhenTheContextEndsMidStatement) {
  ASSERT_TRUE(admin_->Query(Background(),
                            "CREATE TABLE b8 (id int PRIMARY KEY)").ok());
  constexpr int kThreads = 4;
  const int total = testing::PlainOrSanitized(400, 200);
  std::vector<absl::StatusCode> codes(total, absl::StatusCode::kInternal);
  std::atomic<int> next{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto conn = Open();
      ASSERT_NE(conn, nullptr);
      absl::BitGen rng;
      for (int id = next.fetch_add(1); id < total; id = next.fetch_add(1)) {
        // 17-25 ms around a 20 ms statement (plus its round trip).
        const absl::Duration when =
            absl::Microseconds(absl::Uniform(rng, 17000, 25000));
        const std::string sql = "INSERT INTO b8 SELECT $1::int FROM pg_sleep(0.02)";
        absl::StatusOr<Result> r;
        if (id % 2 == 0) {
          auto [ctx, cancel] = WithTimeout(Background(), when);
          r = conn->Query(ctx, sql, {std::to_string(id)});
        } else {
          auto [ctx, cancel] = WithCancel(Background());
          auto [timer, stop_timer] = WithTimeout(Background(), when);
          AfterFuncHandle h = AfterFunc(timer, [cancel = cancel] { cancel(); });
          r = conn->Query(ctx, sql, {std::to_string(id)});
        }
        codes[id] = r.status().code();
        if (IsOutcomeUnknown(r.status()) || !conn->ok()) conn = Open();
      }
    });
  }
  for (auto& th : threads) th.join();
  absl::StatusOr<Result> rows = admin_->Query(Background(), "SELECT id FROM b8");
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::vector<bool> committed(total, false);
  for (size_t i = 0; i < rows->rows(); ++i) {
    int id = -1;
    ASSERT_TRUE(absl::SimpleAtoi(rows->at(i, 0).value_or(""), &id));
    ASSERT_TRUE(id >= 0 && id < total) << id;
    committed[id] = true;
  }
  int ok = 0, ctx_error = 0, unknown = 0;
  for (int id = 0; id < total; ++id) {
    switch (codes[id]) {
      case absl::StatusCode::kOk:
        ++ok;
        EXPECT_TRUE(committed[id]) << "call " << id << " returned OK, no row";
        break;
      case absl::StatusCode::kDeadlineExceeded:
      case absl::StatusCode::kCancelled:
        ++ctx_error;
        EXPECT_FALSE(committed[id])
            << "call " << id << " returned " << absl::StatusCodeToString(codes[id])
            << " but its row was committed";
        break;
      case absl::StatusCode::kUnknown:
        ++unknown;
        break;
      default:
        ADD_FAILURE() << "call " << id << ": " << absl::StatusCodeToString(codes[id]);
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(ctx_error, 0);
  EXPECT_LE(unknown, total / 20);
  std::printf("%d INSERTs, deadline/cancel near their 20 ms: %d OK (row "
              "present), %d canceled (no row), %d outcome unknown\n",
              total, ok, ctx_error, unknown);
  ASSERT_TRUE(admin_->Query(Background(), "DROP TABLE b8").ok());
}

// B8: the Context ends at every point of a short write (deadlines from 0 to
// 0.6 ms in 6 us steps: before the send, on the backstop segment, between
// the segments, during the INSERT, during a COMMIT, after): a call that
// returned OK committed its row, one that returned the Context's error did
// not.
TEST_F(PostgresTest, EveryCancelPointOfAWriteReportsWhatCommitted) {
  ASSERT_TRUE(admin_->Query(Background(),
                            "CREATE TABLE b8_sweep (id int PRIMARY KEY)").ok());
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  const int total = testing::PlainOrSanitized(600, 200);
  std::vector<absl::StatusCode> codes(total, absl::StatusCode::kInternal);
  for (int id = 0; id < total; ++id) {
    const absl::Duration when = absl::Microseconds(id % 100 * 6);
    const std::string v = std::to_string(id);
    absl::StatusOr<Result> r;
    if (id % 4 == 0) {  // Autocommit INSERT.
      auto [ctx, cancel] = WithTimeout(Background(), when);
      r = conn->Query(ctx, "INSERT INTO b8_sweep VALUES ($1::int)", {v});
    } else {  // BEGIN; INSERT; COMMIT under the deadline.
      ASSERT_TRUE(conn->Query(Background(), "BEGIN").ok());
      ASSERT_TRUE(conn->Query(Background(),
                              "INSERT INTO b8_sweep VALUES ($1::int)", {v})
                      .ok());
      auto [ctx, cancel] = WithTimeout(Background(), when);
      r = conn->Query(ctx, "COMMIT");
      if (conn->ok() && !conn->idle_in_no_transaction()) {
        ASSERT_TRUE(conn->Query(Background(), "ROLLBACK").ok());
      }
    }
    codes[id] = r.status().code();
    if (!conn->ok()) conn = Open();
    ASSERT_NE(conn, nullptr);
  }
  absl::StatusOr<Result> rows =
      admin_->Query(Background(), "SELECT id FROM b8_sweep");
  ASSERT_TRUE(rows.ok()) << rows.status();
  std::vector<bool> committed(total, false);
  for (size_t i = 0; i < rows->rows(); ++i) {
    int id = -1;
    ASSERT_TRUE(absl::SimpleAtoi(rows->at(i, 0).value_or(""), &id));
    committed[id] = true;
  }
  int ok = 0, ctx_error = 0, unknown = 0;
  for (int id = 0; id < total; ++id) {
    if (codes[id] == absl::StatusCode::kOk) {
      ++ok;
      EXPECT_TRUE(committed[id]) << "call " << id << " returned OK, no row";
    } else if (codes[id] == absl::StatusCode::kDeadlineExceeded) {
      ++ctx_error;
      EXPECT_FALSE(committed[id]) << "call " << id << " failed, row committed";
    } else {
      ++unknown;
      EXPECT_EQ(codes[id], absl::StatusCode::kUnknown) << "call " << id;
    }
  }
  std::printf("%d writes, deadline 0-0.6 ms: %d OK, %d deadline (no row), %d "
              "unknown\n", total, ok, ctx_error, unknown);
  ASSERT_TRUE(admin_->Query(Background(), "DROP TABLE b8_sweep").ok());
}

// B8: the Context ends while the backstop segment runs (here it waits for a
// lock: a fresh backend reads pg_proc to resolve set_config, which the admin
// holds locked) before a COMMIT. A cancel sent then would abort the
// transaction under the COMMIT, which the server answers with "ROLLBACK",
// no error: the call must not return OK without the row.
TEST_F(PostgresTest, CancelDuringTheBackstopNeverTurnsCommitIntoRollback) {
  ASSERT_TRUE(admin_->Query(Background(),
                            "CREATE TABLE b8_commit (id int)").ok());
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  ASSERT_TRUE(conn->Query(Background(), "BEGIN").ok());
  ASSERT_TRUE(conn->Query(Background(), "INSERT INTO b8_commit VALUES (1)").ok());
  ASSERT_TRUE(admin_->Query(Background(), "BEGIN").ok());
  ASSERT_TRUE(admin_->Query(Background(),
                            "LOCK TABLE pg_catalog.pg_proc IN ACCESS "
                            "EXCLUSIVE MODE").ok());
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<Result> r;
  std::thread q([&, c = ctx] {
    auto [dl, stop] = WithTimeout(c, absl::Seconds(30));
    r = conn->Query(dl, "COMMIT");
  });
  // Waits (bounded) while the backend waits for the lock or not.
  auto waits_for_lock = [&](bool want) {
    const absl::Time end = absl::Now() + absl::Seconds(2);
    while (absl::Now() < end) {
      absl::StatusOr<Result> w = admin_->Query(
          Background(),
          "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1::int",
          {std::to_string(conn->backend_pid())});
      if (w.ok() && (w->at(0, 0) == std::optional<std::string>("1")) == want) {
        return true;
      }
      // The server publishes no event for this: ask again shortly.
      absl::SleepFor(absl::Milliseconds(2));
    }
    return false;
  };
  const bool blocked = waits_for_lock(true);
  cancel();
  // A cancel sent now ends the lock wait; none should be sent yet.
  const bool released_by_cancel = waits_for_lock(false);
  ASSERT_TRUE(admin_->Query(Background(), "ROLLBACK").ok());
  q.join();
  ASSERT_TRUE(blocked);
  absl::StatusOr<Result> rows =
      admin_->Query(Background(), "SELECT count(*) FROM b8_commit");
  ASSERT_TRUE(rows.ok()) << rows.status();
  if (r.ok()) {
    EXPECT_EQ(rows->at(0, 0), std::optional<std::string>("1"))
        << "COMMIT returned OK (lock wait ended by the cancel: "
        << released_by_cancel << ") but nothing was committed";
  } else {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
    EXPECT_EQ(rows->at(0, 0), std::optional<std::string>("0"));
  }
  ASSERT_TRUE(admin_->Query(Background(), "DROP TABLE b8_commit").ok());
}

// B8: someone else's cancel (pg_cancel_backend) hits the backstop segment
// inside a transaction (held on a pg_proc lock, as above): the transaction
// is aborted under the COMMIT, which the server answers "ROLLBACK" with no
// error; the call must report the failure, not OK.
TEST_F(PostgresTest, FailedBackstopInsideATransactionIsReported) {
  ASSERT_TRUE(admin_->Query(Background(),
                            "CREATE TABLE b8_commit2 (id int)").ok());
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  ASSERT_TRUE(conn->Query(Background(), "BEGIN").ok());
  ASSERT_TRUE(
      conn->Query(Background(), "INSERT INTO b8_commit2 VALUES (1)").ok());
  ASSERT_TRUE(admin_->Query(Background(), "BEGIN").ok());
  ASSERT_TRUE(admin_->Query(Background(),
                            "LOCK TABLE pg_catalog.pg_proc IN ACCESS "
                            "EXCLUSIVE MODE").ok());
  absl::StatusOr<Result> r;
  std::thread q([&] {
    auto [dl, stop] = WithTimeout(Background(), absl::Seconds(30));
    r = conn->Query(dl, "COMMIT");
  });
  bool blocked = false;
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (!blocked && absl::Now() < end) {
    absl::StatusOr<Result> w = admin_->Query(
        Background(),
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1::int",
        {std::to_string(conn->backend_pid())});
    blocked = w.ok() && w->at(0, 0) == std::optional<std::string>("1");
    // The server publishes no event for this: ask again shortly.
    if (!blocked) absl::SleepFor(absl::Milliseconds(2));
  }
  const bool canceled =
      blocked && admin_->Query(Background(), "SELECT pg_cancel_backend($1::int)",
                               {std::to_string(conn->backend_pid())})
                     .ok();
  ASSERT_TRUE(admin_->Query(Background(), "ROLLBACK").ok());
  q.join();
  ASSERT_TRUE(canceled);
  absl::StatusOr<Result> rows =
      admin_->Query(Background(), "SELECT count(*) FROM b8_commit2");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->at(0, 0), std::optional<std::string>("0"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAborted) << r.status();
  EXPECT_EQ(SqlState(r.status()), "57014");
  EXPECT_TRUE(conn->idle_in_no_transaction());
  ASSERT_TRUE(admin_->Query(Background(), "DROP TABLE b8_commit2").ok());
}

// The backstop calls pg_catalog's set_config whatever the session's
// search_path: a function of that name in a schema searched first is never
// run (here it would fail, aborting the caller's transaction).
TEST_F(PostgresTest, BackstopIgnoresTheSearchPath) {
  ASSERT_TRUE(admin_->Query(Background(), "CREATE SCHEMA b8_path").ok());
  ASSERT_TRUE(admin_->Query(Background(),
                            "CREATE FUNCTION b8_path.set_config(text, text, "
                            "boolean) RETURNS text LANGUAGE plpgsql AS "
                            "$$BEGIN RAISE EXCEPTION 'not pg_catalog''s'; "
                            "END$$")
                  .ok());
  absl::StatusOr<std::unique_ptr<Connection>> conn = Connection::Connect(
      Background(), PostgresEnv::server->conninfo() +
                        " options='-c search_path=b8_path,pg_catalog'");
  ASSERT_TRUE(conn.ok()) << conn.status();
  ASSERT_TRUE((*conn)->Query(Background(), "BEGIN").ok());
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  absl::StatusOr<Result> r = (*conn)->Query(ctx, "SELECT 1");
  EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*conn)->Query(Background(), "COMMIT").ok());
  ASSERT_TRUE(admin_->Query(Background(), "DROP SCHEMA b8_path CASCADE").ok());
}

// B8: when nothing comes back after the cancel (here: the server process is
// stopped), the call ends within kDrainLimit with "outcome unknown" and the
// connection is closed, never reported as canceled.
TEST_F(PostgresTest, NoAnswerAfterTheCancelIsOutcomeUnknown) {
  auto conn = Open();
  const pid_t backend = conn->backend_pid();
  ASSERT_GT(backend, 0);
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<Result> r;
  std::thread q([&, c = ctx] { r = conn->Query(c, "SELECT pg_sleep(30)"); });
  // The backend (a process of the server this test started) is stopped
  // while it runs the statement, and continued right after.
  const bool active = AwaitActive(backend);
  const bool stopped = active && kill(backend, SIGSTOP) == 0;
  const absl::Time canceled_at = absl::Now();
  cancel();
  q.join();
  const absl::Duration took = absl::Now() - canceled_at;
  if (stopped) kill(backend, SIGCONT);
  ASSERT_TRUE(stopped);
  EXPECT_TRUE(IsOutcomeUnknown(r.status())) << r.status();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnknown);
  EXPECT_FALSE(conn->ok());
  EXPECT_GE(took, Connection::kDrainLimit);
  EXPECT_LT(took, Connection::kDrainLimit + absl::Seconds(2));
  EXPECT_FALSE(IsOutcomeUnknown(absl::UnknownError("x")));
}

// A cancel request the server never answers (here: the postmaster, which
// takes cancel requests, is stopped; the backend still runs) holds the call
// no longer than kDrainLimit after the cancel (PQcancel itself would wait
// until the postmaster runs again), and the connection is then closed, as
// the cancel might still hit its next statement.
TEST_F(PostgresTest, UnansweredCancelRequestIsBoundedByTheDrainLimit) {
  auto conn = Open();
  ASSERT_NE(conn, nullptr);
  const pid_t postmaster = PostgresEnv::server->pid();
  auto [ctx, cancel] = WithCancel(Background());
  absl::StatusOr<Result> r;
  std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  std::thread q([&, c = ctx] {
    absl::StatusOr<Result> got = conn->Query(c, "SELECT pg_sleep(3)");
    std::lock_guard<std::mutex> l(mu);
    r = std::move(got);
    finished = true;
    cv.notify_all();
  });
  const bool active = AwaitActive(conn->backend_pid());
  const bool stopped = active && kill(postmaster, SIGSTOP) == 0;
  const absl::Time canceled_at = absl::Now();
  cancel();
  {
    // Before the fix the call ends only once the postmaster runs again.
    std::unique_lock<std::mutex> l(mu);
    cv.wait_for(l, absl::ToChronoSeconds(Connection::kDrainLimit +
                                         absl::Seconds(10)),
                [&] { return finished; });
  }
  const absl::Duration took = absl::Now() - canceled_at;
  if (stopped) kill(postmaster, SIGCONT);
  q.join();
  ASSERT_TRUE(stopped);
  EXPECT_LT(took, Connection::kDrainLimit + absl::Seconds(2));
  // pg_sleep(3) ended on its own (OK) or the answer is unknown; either way
  // the connection is given up.
  EXPECT_TRUE(r.ok() || IsOutcomeUnknown(r.status())) << r.status();
  EXPECT_FALSE(conn->ok());
  ExpectUsable(*Open());
}

// B9: BEGIN, a canceled query (the transaction is now aborted), ROLLBACK
// under a deadline Context: it runs, and the connection is clean again.
TEST_F(PostgresTest, RollbackWithADeadlineAfterACanceledQuery) {
  auto conn = Open();
  auto [dl, dl_cancel] = WithTimeout(Background(), absl::Seconds(30));
  ASSERT_TRUE(conn->Query(dl, "CREATE TEMP TABLE b9 (k int)").ok());
  for (const char* end : {"ROLLBACK", "COMMIT"}) {
    ASSERT_TRUE(conn->Query(dl, "BEGIN").ok());
    ASSERT_TRUE(conn->Query(dl, "INSERT INTO b9 VALUES (1)").ok());
    auto [ctx, cancel] = WithCancel(Background());
    absl::StatusOr<Result> r;
    std::thread q([&, c = ctx] { r = conn->Query(c, "SELECT pg_sleep(10)"); });
    ASSERT_TRUE(AwaitActive(conn->backend_pid()));
    cancel();
    q.join();
    EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
    EXPECT_FALSE(conn->idle_in_no_transaction());
    r = conn->Query(dl, "SELECT 1");  // Refused: the transaction aborted.
    EXPECT_EQ(SqlState(r.status()), std::optional<std::string>("25P02"));
    r = conn->Query(dl, end);  // With a deadline.
    ASSERT_TRUE(r.ok()) << end << ": " << r.status();
    EXPECT_TRUE(conn->idle_in_no_transaction());
    r = conn->Query(dl, "SELECT count(*) FROM b9");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->at(0, 0), std::optional<std::string>("0"));  // Rolled back.
  }
  ExpectUsable(*conn);
}

// B9: statements that refuse a transaction block or a pipeline run with a
// deadline as without one.
TEST_F(PostgresTest, VacuumAndCreateDatabaseWithADeadline) {
  auto conn = Open();
  auto [dl, dl_cancel] = WithTimeout(Background(), absl::Seconds(60));
  for (const Context& ctx : {dl, Background()}) {
    ASSERT_TRUE(conn->Query(ctx, "CREATE TABLE IF NOT EXISTS vac (k int)").ok());
    absl::StatusOr<Result> r = conn->Query(ctx, "VACUUM vac");
    EXPECT_TRUE(r.ok()) << r.status();
    r = conn->Query(ctx, "CREATE DATABASE b9db");
    EXPECT_TRUE(r.ok()) << r.status();
    r = conn->Query(ctx, "SELECT count(*) FROM pg_database WHERE datname = 'b9db'");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->at(0, 0), std::optional<std::string>("1"));
    r = conn->Query(ctx, "DROP DATABASE b9db");
    EXPECT_TRUE(r.ok()) << r.status();
    r = conn->Query(ctx, "DROP TABLE vac");
    EXPECT_TRUE(r.ok()) << r.status();
  }
  ExpectUsable(*conn);
}

// The backstop lasts for its statement only, inside and outside a
// transaction, and a session default from the conninfo comes back.
TEST_F(PostgresTest, BackstopDoesNotOutliveItsStatement) {
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  absl::StatusOr<std::unique_ptr<Connection>> c = Connection::Connect(
      ctx, PostgresEnv::server->conninfo() +
               " options='-c statement_timeout=7s'");
  ASSERT_TRUE(c.ok()) << c.status();
  Connection& conn = **c;
  auto show = [&](const Context& x) {
    absl::StatusOr<Result> r = conn.Query(x, "SHOW statement_timeout");
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->at(0, 0).value_or("?") : "?";
  };
  EXPECT_EQ(show(Background()), "7s");
  EXPECT_NE(show(ctx), "7s");  // This statement's backstop (~30 s).
  EXPECT_EQ(show(Background()), "7s");
  for (const char* end : {"COMMIT", "ROLLBACK"}) {
    ASSERT_TRUE(conn.Query(ctx, "BEGIN").ok());
    EXPECT_NE(show(ctx), "7s");
    EXPECT_EQ(show(Background()), "7s");
    EXPECT_NE(show(ctx), "7s");
    ASSERT_TRUE(conn.Query(Background(), end).ok());
    EXPECT_EQ(show(Background()), "7s") << "after " << end;
  }
}

// What the backstop costs: SELECT 1 without and with a deadline.
TEST_F(PostgresTest, BackstopCost) {
  auto conn = Open();
  auto [dl, cancel] = WithTimeout(Background(), absl::Seconds(60));
  const int n = testing::PlainOrSanitized(2000, 300);
  const Context none = Background();
  const Context with = dl;
  for (const Context* ctx : {&none, &with}) {
    const absl::Time start = absl::Now();
    for (int i = 0; i < n; ++i) ASSERT_TRUE(conn->Query(*ctx, "SELECT 1").ok());
    std::printf("SELECT 1 %s a deadline: %s per query\n",
                ctx == &with ? "with" : "without",
                absl::FormatDuration((absl::Now() - start) / n).c_str());
  }
}

// A5: a pool of N never has N+1 connections open, on its own count and on
// the server's, however many callers.
TEST_F(PostgresTest, PoolNeverOpensMoreThanMaxOpen) {
  constexpr size_t kMax = 3;
  absl::StatusOr<std::unique_ptr<Pool>> p =
      Pool::New(PostgresEnv::server->conninfo() + " application_name=a5pool",
                {.max_open = kMax, .max_idle = kMax});
  ASSERT_TRUE(p.ok()) << p.status();
  Pool& pool = **p;
  const int kCallers = 30;
  const int per_caller = testing::PlainOrSanitized(10, 4);
  std::atomic<int> running{kCallers}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kCallers; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < per_caller; ++i) {
        auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(60));
        absl::StatusOr<Result> r = pool.Query(ctx, "SELECT pg_sleep(0.005)");
        if (!r.ok()) {
          ++failed;
          ADD_FAILURE() << r.status();
        }
      }
      --running;
    });
  }
  // The server's count, sampled while the callers run.
  int64_t most_on_server = 0, samples = 0;
  const absl::Time end = absl::Now() + absl::Seconds(120);
  while (running.load() > 0 && absl::Now() < end) {
    absl::StatusOr<Result> r = admin_->Query(
        Background(),
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'a5pool'");
    ASSERT_TRUE(r.ok()) << r.status();
    int64_t n = 0;
    ASSERT_TRUE(absl::SimpleAtoi(r->at(0, 0).value_or(""), &n));
    most_on_server = std::max(most_on_server, n);
    ++samples;
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  const Pool::Counts counts = pool.Stats();
  EXPECT_EQ(counts.peak_open, kMax);  // Reached, never passed.
  EXPECT_LE(most_on_server, static_cast<int64_t>(kMax));
  EXPECT_EQ(counts.waiting, 0u);
  EXPECT_LE(counts.open, kMax);
  std::printf("%d callers x %d queries on a pool of %zu: peak %zu open (pool), "
              "%lld (server, %lld samples)\n",
              kCallers, per_caller, kMax, counts.peak_open,
              static_cast<long long>(most_on_server),
              static_cast<long long>(samples));
}

// Waits (bounded) until `pool` has `n` waiters.
bool AwaitWaiters(const Pool& pool, size_t n) {
  const absl::Time end = absl::Now() + absl::Seconds(10);
  while (absl::Now() < end) {
    if (pool.Stats().waiting == n) return true;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return false;
}

// A5: failed connects give their slot back (to a waiter or the pool): after
// many concurrent failures nothing is counted open or waiting.
TEST_F(PostgresTest, FailedConnectsFreeTheirSlots) {
  absl::StatusOr<std::unique_ptr<Pool>> p = Pool::New(
      "host=127.0.0.1 port=1 user=x connect_timeout=5", {.max_open = 2, .max_idle = 2});
  ASSERT_TRUE(p.ok()) << p.status();
  Pool& pool = **p;
  std::atomic<int> unavailable{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
        if (pool.Query(ctx, "SELECT 1").status().code() ==
            absl::StatusCode::kUnavailable) {
          ++unavailable;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(unavailable.load(), 40);
  const Pool::Counts c = pool.Stats();
  EXPECT_EQ(c.open, 0u);
  EXPECT_EQ(c.waiting, 0u);
  EXPECT_LE(c.peak_open, 2u);
}

// A5: Acquire on a full pool waits only as long as its Context, and a
// returned connection goes to a waiter.
TEST_F(PostgresTest, AcquireWaitsOnlyAsLongAsItsContext) {
  absl::StatusOr<std::unique_ptr<Pool>> p =
      Pool::New(PostgresEnv::server->conninfo(), {.max_open = 1, .max_idle = 1});
  ASSERT_TRUE(p.ok()) << p.status();
  Pool& pool = **p;
  absl::StatusOr<Pool::Lease> held = pool.Acquire(Background());
  ASSERT_TRUE(held.ok()) << held.status();
  const int pid = (*held)->backend_pid();

  // Deadline.
  const absl::Time start = absl::Now();
  auto [dl, dl_cancel] = WithTimeout(Background(), absl::Milliseconds(100));
  absl::StatusOr<Pool::Lease> l = pool.Acquire(dl);
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(l.status().code(), absl::StatusCode::kDeadlineExceeded) << l.status();
  EXPECT_GE(took, absl::Milliseconds(95));
  EXPECT_LT(took, absl::Milliseconds(100) + kSlack);
  EXPECT_EQ(pool.Stats().waiting, 0u);

  // Cancel from another thread while waiting.
  {
    auto [ctx, cancel] = WithCancel(Background());
    std::thread t([&, c = ctx] { l = pool.Acquire(c); });
    ASSERT_TRUE(AwaitWaiters(pool, 1));
    cancel();
    t.join();
    EXPECT_EQ(l.status().code(), absl::StatusCode::kCancelled) << l.status();
  }
  // A returned connection wakes a waiter (with no deadline).
  {
    std::thread t([&] { l = pool.Acquire(Background()); });
    ASSERT_TRUE(AwaitWaiters(pool, 1));
    held->Return();
    t.join();
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_EQ((*l)->backend_pid(), pid);  // The same connection.
  }
  EXPECT_EQ(pool.Stats().peak_open, 1u);
  EXPECT_EQ(Pool::New("", {.max_open = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Pool::New("", {.max_open = 2, .max_idle = 3}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Pool::New("", {.reset_timeout = absl::ZeroDuration()})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
}

// B9: a connection returned inside a transaction (open, or aborted by a
// cancel) comes back out of the pool clean: rolled back, no transaction.
TEST_F(PostgresTest, PoolHandsOutOnlyCleanConnections) {
  ASSERT_TRUE(admin_->Query(Background(), "CREATE TABLE pool_b9 (k int)").ok());
  absl::StatusOr<std::unique_ptr<Pool>> p =
      Pool::New(PostgresEnv::server->conninfo(), {.max_open = 1, .max_idle = 1});
  ASSERT_TRUE(p.ok()) << p.status();
  Pool& pool = **p;
  auto [dl, dl_cancel] = WithTimeout(Background(), absl::Seconds(30));
  for (bool cancel_inside : {false, true}) {
    {
      absl::StatusOr<Pool::Lease> l = pool.Acquire(dl);
      ASSERT_TRUE(l.ok()) << l.status();
      ASSERT_TRUE((*l)->Query(dl, "BEGIN").ok());
      ASSERT_TRUE((*l)->Query(dl, "INSERT INTO pool_b9 VALUES (1)").ok());
      if (cancel_inside) {
        auto [ctx, cancel] = WithTimeout(Background(), absl::Milliseconds(20));
        EXPECT_EQ((*l)->Query(ctx, "SELECT pg_sleep(10)").status().code(),
                  absl::StatusCode::kDeadlineExceeded);
      }
    }  // Returned mid-transaction.
    absl::StatusOr<Pool::Lease> l = pool.Acquire(dl);
    ASSERT_TRUE(l.ok()) << l.status();
    EXPECT_TRUE((*l)->idle_in_no_transaction());
    absl::StatusOr<Result> r = (*l)->Query(dl, "SELECT count(*) FROM pool_b9");
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->at(0, 0), std::optional<std::string>("0"));
  }
  EXPECT_EQ(pool.Stats().resets, 2u);
  EXPECT_EQ(pool.Stats().peak_open, 1u);
  ASSERT_TRUE(admin_->Query(Background(), "DROP TABLE pool_b9").ok());
}

// B9: an idle connection the server closed while it sat in the pool (its
// backend terminated, as a server restart or an idle timeout does) is not
// handed out: the next Query runs on a fresh connection.
TEST_F(PostgresTest, PoolNeverHandsOutAConnectionTheServerClosed) {
  absl::StatusOr<std::unique_ptr<Pool>> p =
      Pool::New(PostgresEnv::server->conninfo(), {.max_open = 1, .max_idle = 1});
  ASSERT_TRUE(p.ok()) << p.status();
  Pool& pool = **p;
  auto [dl, dl_cancel] = WithTimeout(Background(), absl::Seconds(30));
  absl::StatusOr<Result> pid = pool.Query(dl, "SELECT pg_backend_pid()");
  ASSERT_TRUE(pid.ok()) << pid.status();
  ASSERT_EQ(pool.Stats().idle, 1u);
  ASSERT_TRUE(admin_->Query(Background(),
                            "SELECT pg_terminate_backend($1::int, 10000)",
                            {pid->at(0, 0)})
                  .ok());
  absl::StatusOr<Result> r = pool.Query(dl, "SELECT 41 + 1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->at(0, 0), std::optional<std::string>("42"));
  EXPECT_EQ(pool.Stats().open, 1u);
}

// A7: no password in any error, whatever the conninfo's shape.
TEST_F(PostgresTest, ErrorsNeverContainThePassword) {
  EXPECT_EQ(RedactSecrets("host=h password=hunter2 user=u"),
            "host=h password=*** user=u");
  EXPECT_EQ(RedactSecrets("host=h PASSWORD = 'hun ter\\'2' user=u"),
            "host=h PASSWORD = *** user=u");
  EXPECT_EQ(RedactSecrets("sslpassword=x password='unterminated"),
            "sslpassword=*** password=***");
  EXPECT_EQ(RedactSecrets("bad URI: \"postgresql://al:hunter2@[::1\""),
            "bad URI: \"postgresql://al:***@[::1\"");
  EXPECT_EQ(RedactSecrets("postgresql://al:hun/ter@2@h:5/db x"),
            "postgresql://al:***@h:5/db x");
  EXPECT_EQ(RedactSecrets("postgres://al@h/db?password=hunter2&sslmode=x"),
            "postgres://al@h/db?password=***&sslmode=x");
  EXPECT_EQ(RedactSecrets("password authentication failed for user \"al\""),
            "password authentication failed for user \"al\"");
  // libpq's own reading of values: backslash escapes, quotes and '&' in an
  // unquoted value, any space around '=', percent-encoded URI parameter
  // names, a URI password with spaces or quotes (ends at '@').
  EXPECT_EQ(RedactSecrets("host=h password=abc\\ def user=u"),
            "host=h password=*** user=u");
  EXPECT_EQ(RedactSecrets("host=h password=\"x,y\"&z user=u"),
            "host=h password=*** user=u");
  EXPECT_EQ(RedactSecrets("host=h password\t=\tsecret"),
            "host=h password\t=\t***");
  EXPECT_EQ(RedactSecrets("postgresql://h/db?%70assword=secret&x=1"),
            "postgresql://h/db?%70assword=***&x=1");
  EXPECT_EQ(RedactSecrets("postgresql://u:pa ss@h/db"),
            "postgresql://u:***@h/db");
  EXPECT_EQ(RedactSecrets("bad: \"postgresql://u:p\"w@[::1\""),
            "bad: \"postgresql://u:***@[::1\"");
  const std::string port = std::to_string(PostgresEnv::server->port());
  for (const std::string& conninfo : std::vector<std::string>{
           "host=127.0.0.1 port=1 user=alice password=hunter2 dbname=x",
           "host=127.0.0.1 port=" + port + " password=hunter2 bogus=1",
           "host=127.0.0.1 password='hunter2",
           "postgresql://alice:hunter2@[::1",
           "postgresql://alice:hunter2@127.0.0.1:" + port + "/db?bogus=1",
           "postgresql://alice:hunter2@127.0.0.1:1/db",
           "postgresql://alice:x hunter2@[::1",
           "postgresql://alice:x\"hunter2@[::1",
           "postgresql://[::1?%70assword=hunter2",
           "host=127.0.0.1 port=1 password=x\\ hunter2",
       }) {
    absl::StatusOr<std::unique_ptr<Connection>> c =
        Connection::Connect(Background(), conninfo);
    ASSERT_FALSE(c.ok()) << conninfo;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable) << c.status();
    EXPECT_EQ(c.status().message().find("hunter2"), std::string::npos)
        << c.status();
  }
}

// A7: the conninfo's missing parts come from libpq's PG* variables and the
// password file; a real password check (scram-sha-256 for one role).
TEST_F(PostgresTest, PasswordFromPgPassFileOrEnvironment) {
  // Password authentication for role `pwuser` only (first matching line).
  const std::string hba = PostgresEnv::server->data_dir() + "/pg_hba.conf";
  {
    std::ifstream in(hba);
    std::stringstream old;
    old << in.rdbuf();
    std::ofstream out(hba, std::ios::trunc);
    out << "host all pwuser 127.0.0.1/32 scram-sha-256\n" << old.str();
  }
  ASSERT_TRUE(admin_->Query(Background(),
                            "CREATE ROLE pwuser LOGIN PASSWORD 'hunter2'").ok());
  ASSERT_TRUE(admin_->Query(Background(), "SELECT pg_reload_conf()").ok());
  const std::string port = std::to_string(PostgresEnv::server->port());
  const std::string passfile = ::testing::TempDir() + "/pgpass";
  {
    std::ofstream out(passfile, std::ios::trunc);
    out << "127.0.0.1:" << port << ":*:pwuser:hunter2\n";
  }
  ASSERT_EQ(chmod(passfile.c_str(), 0600), 0);
  auto connect = [](const std::string& conninfo) {
    auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
    return Connection::Connect(ctx, conninfo);
  };
  // Everything from the environment, the password from PGPASSFILE.
  setenv("PGHOST", "127.0.0.1", 1);
  setenv("PGPORT", port.c_str(), 1);
  setenv("PGUSER", "pwuser", 1);
  setenv("PGDATABASE", "postgres", 1);
  setenv("PGPASSFILE", "/nonexistent", 1);
  // The reload is asynchronous: wait (bounded) until the password is asked.
  absl::Status no_password;
  for (int i = 0; i < 1000; ++i) {
    no_password = connect("").status();
    if (!no_password.ok()) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(no_password.code(), absl::StatusCode::kUnavailable) << no_password;
  setenv("PGPASSFILE", passfile.c_str(), 1);
  absl::StatusOr<std::unique_ptr<Connection>> c = connect("");
  EXPECT_TRUE(c.ok()) << c.status();
  c = connect("dbname=postgres application_name=from_env");
  EXPECT_TRUE(c.ok()) << c.status();
  unsetenv("PGPASSFILE");
  setenv("PGPASSWORD", "hunter2", 1);
  c = connect("");
  EXPECT_TRUE(c.ok()) << c.status();
  setenv("PGPASSWORD", "wrong-secret", 1);
  c = connect("");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(c.status().message().find("wrong-secret"), std::string::npos);
  for (const char* v : {"PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD"}) {
    unsetenv(v);
  }
  ASSERT_TRUE(admin_->Query(Background(), "DROP ROLE pwuser").ok());
}

}  // namespace
}  // namespace reqctx::postgres

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new reqctx::postgres::PostgresEnv());
  return RUN_ALL_TESTS();
}
