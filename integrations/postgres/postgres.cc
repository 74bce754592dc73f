#include "integrations/postgres/postgres.h"

#include <poll.h>
#include <postgresql/libpq-fe.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/waitable.h"

namespace reqctx::postgres {
namespace {

constexpr char kSqlStatePayload[] = "reqctx.postgres/sqlstate";
// The backstop, sent in the query's own (implicit) transaction.
constexpr char kSetStatementTimeout[] =
    "SELECT set_config('statement_timeout', $1, true)";

constexpr absl::Duration kBackstopGrace = absl::Milliseconds(5);

enum class Ready { kSocket, kDone, kTimeout, kError };

// Waits until `sock` has one of `events`, the descriptor `done_fd` (-1: none)
// is readable, or `end` passes. A done Context wins a tie, so a server that
// keeps the socket busy (a long result) cannot delay the cancel.
Ready WaitFor(int sock, short events, int done_fd, absl::Time end) {
  for (;;) {
    pollfd fds[2] = {{sock, events, 0}, {done_fd, POLLIN, 0}};
    int timeout_ms = -1;
    if (end != absl::InfiniteFuture()) {
      const absl::Duration left = end - absl::Now();
      if (left <= absl::ZeroDuration()) return Ready::kTimeout;
      timeout_ms = static_cast<int>(
          absl::ToInt64Milliseconds(std::min(left, absl::Hours(1))) + 1);
    }
    const int n = poll(fds, done_fd >= 0 ? 2 : 1, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Ready::kError;
    }
    if (n == 0) continue;  // Re-checks `end`.
    if (done_fd >= 0 && fds[1].revents != 0) return Ready::kDone;
    if (fds[0].revents != 0) return Ready::kSocket;  // Incl. POLLERR/HUP.
  }
}

std::string Trimmed(const char* msg) {
  std::string s = msg == nullptr ? "" : msg;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

absl::StatusCode CodeForSqlState(std::string_view state) {
  if (state == "23505") return absl::StatusCode::kAlreadyExists;
  if (state == "57014") {
    // Not this Context's cancel (that case never gets here).
    return absl::StatusCode::kAborted;
  }
  if (state.size() != 5) return absl::StatusCode::kUnknown;
  const std::string_view cls = state.substr(0, 2);
  if (cls == "42" || cls == "22") return absl::StatusCode::kInvalidArgument;
  if (cls == "23") return absl::StatusCode::kFailedPrecondition;
  if (cls == "40") return absl::StatusCode::kAborted;
  if (cls == "53") return absl::StatusCode::kResourceExhausted;
  if (cls == "08" || state.substr(0, 4) == "57P0") {
    return absl::StatusCode::kUnavailable;
  }
  return absl::StatusCode::kUnknown;
}

absl::Status SqlError(const PGresult* res) {
  const char* st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const std::string state = st == nullptr ? "" : st;
  const std::string message = Trimmed(PQresultErrorMessage(res));
  absl::Status s(CodeForSqlState(state),
                 absl::StrCat("postgres: ", message));
  if (!state.empty()) s.SetPayload(kSqlStatePayload, absl::Cord(state));
  return s;
}

}  // namespace

const std::optional<std::string>& Result::at(size_t row,
                                             size_t column) const {
  static const std::optional<std::string> kNone;
  if (row >= rows_.size() || column >= rows_[row].size()) return kNone;
  return rows_[row][column];
}

std::optional<std::string> SqlState(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(kSqlStatePayload);
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

Connection::Connection(pg_conn* conn, pg_cancel* cancel)
    : conn_(conn), cancel_(cancel) {}

Connection::~Connection() { Close(); }

void Connection::Close() {
  if (cancel_ != nullptr) PQfreeCancel(cancel_);
  if (conn_ != nullptr) PQfinish(conn_);
  cancel_ = nullptr;
  conn_ = nullptr;
}

bool Connection::ok() const {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
}

int Connection::backend_pid() const {
  return conn_ == nullptr ? 0 : PQbackendPID(conn_);
}

absl::StatusOr<std::unique_ptr<Connection>> Connection::Connect(
    const Context& ctx, const std::string& conninfo) {
  if (absl::Status s = ctx.Err(); !s.ok()) return s;
  absl::StatusOr<DoneFd> done = DoneFd::Open(ctx);
  if (!done.ok()) return done.status();
  PGconn* c = PQconnectStart(conninfo.c_str());
  if (c == nullptr) {
    return absl::ResourceExhaustedError("postgres: out of memory");
  }
  auto fail = [c](absl::StatusCode code) {
    absl::Status s(code, absl::StrCat("postgres: connect: ",
                                      Trimmed(PQerrorMessage(c))));
    PQfinish(c);
    return s;
  };
  if (PQstatus(c) == CONNECTION_BAD) {
    return fail(absl::StatusCode::kUnavailable);
  }
  PostgresPollingStatusType st = PGRES_POLLING_WRITING;
  while (st != PGRES_POLLING_OK) {
    if (st == PGRES_POLLING_FAILED) {
      return fail(absl::StatusCode::kUnavailable);
    }
    const Ready r =
        WaitFor(PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
                done->fd(), absl::InfiniteFuture());
    if (r == Ready::kDone) {
      PQfinish(c);
      return ctx.Err();
    }
    if (r == Ready::kError) return fail(absl::StatusCode::kUnavailable);
    st = PQconnectPoll(c);
  }
  if (PQsetnonblocking(c, 1) != 0) return fail(absl::StatusCode::kInternal);
  PGcancel* cancel = PQgetCancel(c);
  if (cancel == nullptr) return fail(absl::StatusCode::kResourceExhausted);
  return std::unique_ptr<Connection>(new Connection(c, cancel));
}

absl::StatusOr<Result> Connection::Query(
    const Context& ctx, std::string_view sql,
    const std::vector<std::optional<std::string>>& params) {
  if (busy_.exchange(true, std::memory_order_acquire)) {
    return absl::FailedPreconditionError(
        "postgres: Query while another Query runs on this Connection");
  }
  struct Release {
    std::atomic<bool>& busy;
    ~Release() { busy.store(false, std::memory_order_release); }
  } release{busy_};

  if (absl::Status s = ctx.Err(); !s.ok()) return s;
  if (!ok()) return absl::UnavailableError("postgres: connection is broken");
  const std::string sql_text(sql);
  if (sql_text.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("postgres: SQL text contains a NUL");
  }
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const std::optional<std::string>& p : params) {
    if (p.has_value() && p->find('\0') != std::string::npos) {
      return absl::InvalidArgumentError("postgres: parameter contains a NUL");
    }
    values.push_back(p.has_value() ? p->c_str() : nullptr);
  }
  absl::StatusOr<DoneFd> done = DoneFd::Open(ctx);
  if (!done.ok()) return done.status();

  auto broken = [this](const char* what) {
    absl::Status s = absl::UnavailableError(absl::StrCat(
        "postgres: ", what, ": ", Trimmed(PQerrorMessage(conn_))));
    Close();
    return s;
  };

  // Send: [set_config backstop,] the statement[, sync], in one round trip.
  const std::optional<absl::Time> deadline = ctx.Deadline();
  const bool pipeline = deadline.has_value();
  if (pipeline) {
    // The time left plus a small grace: the client's own cancel (which
    // reports exactly this Context's error) normally acts first; the
    // backstop is for a client that stalls or vanishes.
    const int64_t ms = std::max<int64_t>(
        1, absl::ToInt64Milliseconds(*deadline - absl::Now() + kBackstopGrace));
    const std::string timeout = std::to_string(ms);
    const char* v[1] = {timeout.c_str()};
    if (PQenterPipelineMode(conn_) != 1 ||
        PQsendQueryParams(conn_, kSetStatementTimeout, 1, nullptr, v, nullptr,
                          nullptr, 0) != 1) {
      return broken("send");
    }
  }
  if (PQsendQueryParams(conn_, sql_text.c_str(),
                        static_cast<int>(values.size()), nullptr,
                        values.data(), nullptr, nullptr, 0) != 1 ||
      (pipeline && PQpipelineSync(conn_) != 1)) {
    return broken("send");
  }

  const int sock = PQsocket(conn_);
  bool canceled = false;  // This Context was done first; a cancel was sent.
  absl::Time drain_end = absl::InfiniteFuture();
  // Waits for `events`; on the Context's descriptor, sends the cancel and
  // from then on waits only for the server (at most kDrainLimit). Returns
  // false if the connection had to be given up.
  auto wait = [&](short events) {
    for (;;) {
      const Ready r =
          WaitFor(sock, events, canceled ? -1 : done->fd(), drain_end);
      if (r == Ready::kSocket) return true;
      if (r != Ready::kDone) return false;  // kTimeout, kError.
      canceled = true;
      drain_end = absl::Now() + kDrainLimit;
      char err[256];
      PQcancel(cancel_, err, sizeof err);  // On failure the drain bounds it.
    }
  };

  for (;;) {
    const int f = PQflush(conn_);
    if (f < 0) return broken("send");
    if (f == 0) break;
    if (!wait(POLLIN | POLLOUT)) {
      Close();
      return canceled ? ctx.Err() : absl::UnavailableError("postgres: send");
    }
    if (PQconsumeInput(conn_) != 1) return broken("receive");
  }

  Result result;
  std::optional<absl::Status> query_error;
  std::optional<absl::Status> setup_error;
  bool backstop_fired = false;
  int stmt = 0;  // Which statement's results come next.
  const int user_stmt = pipeline ? 1 : 0;
  for (;;) {
    while (PQisBusy(conn_)) {
      if (!wait(POLLIN)) {
        Close();
        return canceled ? ctx.Err()
                        : absl::UnavailableError("postgres: receive");
      }
      if (PQconsumeInput(conn_) != 1) return broken("receive");
    }
    PGresult* res = PQgetResult(conn_);
    if (res == nullptr) {  // The end of one statement's results.
      if (!pipeline) break;  // Else the sync result ends the loop.
      ++stmt;
      continue;
    }
    const ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      break;
    }
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      PQclear(res);
      Close();  // No way back to idle without running the COPY.
      return absl::InvalidArgumentError("postgres: COPY is not supported");
    }
    if (stmt != user_stmt) {
      if (st == PGRES_FATAL_ERROR && !setup_error) setup_error = SqlError(res);
    } else if (st == PGRES_FATAL_ERROR) {
      if (!query_error) {
        query_error = SqlError(res);
        const char* msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        backstop_fired = pipeline && SqlState(*query_error) == "57014" &&
                         msg != nullptr && strstr(msg, "statement timeout");
      }
    } else if (st == PGRES_PIPELINE_ABORTED) {
      if (!query_error) {
        query_error = setup_error.value_or(
            absl::AbortedError("postgres: pipeline aborted"));
      }
    } else if (!query_error) {
      const int n = PQntuples(res);
      const int m = PQnfields(res);
      result.column_names_.clear();
      result.rows_.clear();
      for (int j = 0; j < m; ++j) result.column_names_.push_back(PQfname(res, j));
      result.rows_.resize(n);
      for (int i = 0; i < n; ++i) {
        result.rows_[i].reserve(m);
        for (int j = 0; j < m; ++j) {
          if (PQgetisnull(res, i, j)) {
            result.rows_[i].emplace_back(std::nullopt);
          } else {
            result.rows_[i].emplace_back(
                std::string(PQgetvalue(res, i, j), PQgetlength(res, i, j)));
          }
        }
      }
      int64_t affected = 0;
      if (!absl::SimpleAtoi(PQcmdTuples(res), &affected)) affected = 0;
      result.affected_rows_ = affected;
    }
    PQclear(res);
  }
  if (pipeline && PQexitPipelineMode(conn_) != 1) return broken("pipeline");

  if (canceled) return ctx.Err();
  if (query_error) {
    if (backstop_fired) {
      // The server's copy of this Context's deadline fired first.
      return absl::DeadlineExceededError(absl::StrCat(
          "context deadline exceeded (", query_error->message(), ")"));
    }
    if (SqlState(*query_error) == "57014" && !ctx.Err().ok()) {
      return ctx.Err();
    }
    return *query_error;
  }
  return result;
}

absl::StatusOr<Result> Pool::Query(
    const Context& ctx, std::string_view sql,
    const std::vector<std::optional<std::string>>& params) {
  std::unique_ptr<Connection> conn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    }
  }
  if (conn == nullptr) {
    absl::StatusOr<std::unique_ptr<Connection>> c =
        Connection::Connect(ctx, conninfo_);
    if (!c.ok()) return c.status();
    conn = std::move(*c);
  }
  absl::StatusOr<Result> r = conn->Query(ctx, sql, params);
  if (conn->ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < max_idle_) idle_.push_back(std::move(conn));
  }
  return r;  // A connection not kept is closed here, outside the lock.
}

}  // namespace reqctx::postgres
