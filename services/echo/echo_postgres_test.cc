// The echo service on a real PostgreSQL 15 (LocalServer): what a gRPC
// client sees of database failures (A7), where the conninfo comes from
// (file, PG* environment), and the pool's bound on connections (A5).
#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "integrations/postgres/local_server.h"
#include "integrations/postgres/postgres.h"
#include "proto/echo.grpc.pb.h"
#include "services/echo/echo_server.h"

namespace reqctx::echo {
namespace {

class EchoPostgresTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<postgres::LocalServer>> s =
        postgres::LocalServer::Start();
    if (s.ok()) {
      db_ = std::move(*s).release();
    } else {
      *start_error_ = s.status();
    }
  }
  static void TearDownTestSuite() {
    delete db_;
    db_ = nullptr;
  }
  void SetUp() override {
    if (db_ == nullptr) {
      if (start_error_->code() == absl::StatusCode::kFailedPrecondition) {
        GTEST_SKIP() << "no PostgreSQL here: " << start_error_->message();
      }
      FAIL() << "PostgreSQL did not start: " << *start_error_;
    }
  }

  // Starts an echo server on `conninfo` whose database log goes to log_.
  std::unique_ptr<EchoServer> Serve(const std::string& conninfo,
                                    size_t max_open = 10) {
    EchoServerOptions o;
    o.name = "pgecho";
    o.postgres = conninfo;
    o.postgres_pool.max_open = max_open;
    o.postgres_pool.max_idle = max_open;
    o.log = [this](std::string_view line) {
      std::lock_guard<std::mutex> lock(mu_);
      log_.append(line).append("\n");
    };
    absl::StatusOr<std::unique_ptr<EchoServer>> s = EchoServer::Start(o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  static grpc::Status Call(const EchoServer& server, int64_t work_ms) {
    auto stub = ::echo::v1::Echo::NewStub(grpc::CreateChannel(
        server.address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext cc;
    cc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    ::echo::v1::EchoRequest request;
    request.set_message("hi");
    request.set_work_ms(work_ms);
    ::echo::v1::EchoResponse response;
    return stub->Echo(&cc, request, &response);
  }

  std::string Log() {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }

  static inline postgres::LocalServer* db_ = nullptr;
  static inline absl::Status* const start_error_ = new absl::Status();
  std::mutex mu_;
  std::string log_;
};

// A7: a client learns "database unavailable" and nothing else; the log has
// the details without the password.
TEST_F(EchoPostgresTest, DatabaseDetailsStayInTheLogWithoutSecrets) {
  for (const std::string& conninfo : {
           std::string("host=127.0.0.1 port=1 user=alice password=hunter2 "
                       "dbname=secretdb"),
           std::string("postgresql://alice:hunter2@[::1"),
           absl::StrCat("host=127.0.0.1 port=", db_->port(),
                        " user=alice password=hunter2 typo_option=1"),
       }) {
    std::unique_ptr<EchoServer> server = Serve(conninfo);
    ASSERT_NE(server, nullptr);
    grpc::Status s = Call(*server, 10);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << conninfo;
    EXPECT_EQ(s.error_message(), "database unavailable") << conninfo;
    for (const char* secret : {"127.0.0.1", "alice", "hunter2", "secretdb",
                               "::1", "typo_option"}) {
      EXPECT_EQ(s.error_message().find(secret), std::string::npos) << secret;
    }
  }
  const std::string log = Log();
  EXPECT_NE(log.find("pgecho: database: UNAVAILABLE"), std::string::npos) << log;
  EXPECT_NE(log.find("typo_option"), std::string::npos) << log;  // Details.
  EXPECT_EQ(log.find("hunter2"), std::string::npos) << log;
}

// A7: a password on the command line is refused; the conninfo comes from a
// file or from the PG* variables, and both connect.
TEST_F(EchoPostgresTest, ConninfoFromFileOrEnvironment) {
  absl::StatusOr<std::string> c = PostgresConninfo("host=h password=hunter2", "");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message().find("hunter2"), std::string::npos);
  c = PostgresConninfo("postgresql://u:hunter2@h/db", "");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PostgresConninfo("dbname=x", "/f").status().code(),
            absl::StatusCode::kInvalidArgument);
  c = PostgresConninfo("", "/nonexistent/conninfo");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("/nonexistent/conninfo"),
            std::string::npos);
  EXPECT_EQ(*PostgresConninfo("", ""), "");

  // From a file (which may hold a password: trust auth ignores it here).
  const std::string file = ::testing::TempDir() + "/conninfo";
  {
    std::ofstream out(file, std::ios::trunc);
    out << "  " << db_->conninfo() << " password=in-the-file\n";
  }
  ASSERT_EQ(chmod(file.c_str(), 0600), 0);
  c = PostgresConninfo("", file);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(*c, db_->conninfo() + " password=in-the-file");
  std::unique_ptr<EchoServer> server = Serve(*c);
  ASSERT_NE(server, nullptr);
  grpc::Status s = Call(*server, 5);
  EXPECT_TRUE(s.ok()) << s.error_message();
  server.reset();

  // From the environment: the flag names only the database.
  setenv("PGHOST", "127.0.0.1", 1);
  setenv("PGPORT", std::to_string(db_->port()).c_str(), 1);
  setenv("PGUSER", "postgres", 1);
  c = PostgresConninfo("dbname=postgres", "");
  ASSERT_TRUE(c.ok()) << c.status();
  server = Serve(*c);
  ASSERT_NE(server, nullptr);
  s = Call(*server, 5);
  EXPECT_TRUE(s.ok()) << s.error_message();
  server.reset();
  for (const char* v : {"PGHOST", "PGPORT", "PGUSER"}) unsetenv(v);
  EXPECT_EQ(Log(), "");
}

// A5: many concurrent calls share at most max_open database connections
// (counted by the server), and all of them are served.
TEST_F(EchoPostgresTest, ConcurrentCallsShareABoundedPool) {
  constexpr size_t kMax = 2;
  std::unique_ptr<EchoServer> server =
      Serve(db_->conninfo() + " application_name=echo_a5", kMax);
  ASSERT_NE(server, nullptr);
  // The counting connection first: on a loaded machine opening it can take
  // longer than the calls below.
  auto [ctx, cancel] = WithTimeout(Background(), absl::Seconds(30));
  absl::StatusOr<std::unique_ptr<postgres::Connection>> admin =
      postgres::Connection::Connect(ctx, db_->conninfo());
  ASSERT_TRUE(admin.ok()) << admin.status();
  int64_t most = 0;
  // Counts the server's connections of the pool into `most`; an error if
  // the count could not be read.
  auto count = [&]() -> absl::Status {
    absl::StatusOr<postgres::Result> r = (*admin)->Query(
        Background(),
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'echo_a5'");
    if (!r.ok()) return r.status();
    int64_t n = 0;
    if (!absl::SimpleAtoi(r->at(0, 0).value_or(""), &n)) {
      return absl::InternalError("count(*) is not a number");
    }
    most = std::max(most, n);
    return absl::OkStatus();
  };
  constexpr int kCalls = 20;
  std::atomic<int> running{kCalls}, failed{0};
  std::vector<std::thread> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.emplace_back([&] {
      grpc::Status s = Call(*server, 50);
      if (!s.ok()) {
        ++failed;
        ADD_FAILURE() << s.error_message();
      }
      --running;
    });
  }
  const absl::Time end = absl::Now() + absl::Seconds(60);
  absl::Status counted = absl::OkStatus();
  while (counted.ok() && running.load() > 0 && absl::Now() < end) {
    counted = count();
  }
  for (auto& t : calls) t.join();
  ASSERT_TRUE(counted.ok()) << counted;
  // The pool keeps what it opened as idle connections: counted once more
  // after the calls, so the bound is checked even if every call ended
  // between two counts.
  counted = count();
  ASSERT_TRUE(counted.ok()) << counted;
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GE(most, 1);
  EXPECT_LE(most, static_cast<int64_t>(kMax));
  std::printf("%d concurrent calls, pool of %zu: at most %lld connections on "
              "the server\n", kCalls, kMax, static_cast<long long>(most));
}

}  // namespace
}  // namespace reqctx::echo
