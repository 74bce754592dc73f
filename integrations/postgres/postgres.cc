#include "integrations/postgres/postgres.h"

#include <poll.h>
#include <postgresql/libpq-fe.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/after_func.h"
#include "context/context.h"
#include "context/internal/thread_start.h"
#include "context/waitable.h"

namespace reqctx::postgres {
namespace {

constexpr char kSqlStatePayload[] = "reqctx.postgres/sqlstate";
constexpr char kOutcomeUnknown[] = "postgres: outcome unknown: ";
// The backstop, a pipeline segment of its own before the statement's
// (session-level: a SET LOCAL would end with its own segment's Sync).
constexpr char kSetStatementTimeout[] =
    "SELECT pg_catalog.set_config('statement_timeout', $1, false)";
constexpr char kResetStatementTimeout[] = "RESET statement_timeout";

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

// A cancel request in flight (see SendCancel).
struct CancelRequest {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;  // Guarded by mu.
};

// Cancel requests in flight in this process, and their bound.
constexpr int kMaxCancelsInFlight = 64;
std::atomic<int> cancels_in_flight{0};

// Sends a cancel request for `conn`'s running statement on a thread of its
// own: PQcancel has no timeout and returns only once the server has closed
// the cancel connection, so a server (or a network) that never answers
// would otherwise hold the caller past any bound. Returns null when nothing
// was sent: kMaxCancelsInFlight requests already wait for their servers, or
// no thread or memory could be had (kDrainLimit still bounds the caller).
std::shared_ptr<CancelRequest> SendCancel(PGconn* conn) {
  if (cancels_in_flight.fetch_add(1, std::memory_order_relaxed) >=
      kMaxCancelsInFlight) {
    cancels_in_flight.fetch_sub(1, std::memory_order_relaxed);
    return nullptr;
  }
  PGcancel* cancel = PQgetCancel(conn);  // A copy the thread owns.
  std::shared_ptr<CancelRequest> request;
  try {
    if (cancel == nullptr) throw std::bad_alloc();
    request = std::make_shared<CancelRequest>();
    internal::StartThread([cancel, request] {
      char err[256];
      PQcancel(cancel, err, sizeof err);  // On failure the drain bounds it.
      PQfreeCancel(cancel);
      {
        std::lock_guard<std::mutex> lock(request->mu);
        request->done = true;
      }
      request->cv.notify_all();
      cancels_in_flight.fetch_sub(1, std::memory_order_relaxed);
    }).detach();
  } catch (const std::exception&) {  // std::system_error, std::bad_alloc.
    if (cancel != nullptr) PQfreeCancel(cancel);
    cancels_in_flight.fetch_sub(1, std::memory_order_relaxed);
    return nullptr;
  }
  return request;
}

// True once the server has processed `request`; false if it has not by `end`.
bool AwaitCancel(CancelRequest& request, absl::Time end) {
  std::unique_lock<std::mutex> lock(request.mu);
  return request.cv.wait_for(
      lock, absl::ToChronoNanoseconds(std::max(end - absl::Now(),
                                               absl::ZeroDuration())),
      [&request] { return request.done; });
}

// A libpq message, trailing newlines and spaces removed, secrets redacted.
std::string Trimmed(const char* msg) {
  std::string s = msg == nullptr ? "" : msg;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return RedactSecrets(s);
}

bool IsKeyChar(char c) { return absl::ascii_isalnum(c) || c == '_'; }

// The end of the key starting at `i`: key characters and %XX escapes (libpq
// percent-decodes a URI's query parameter names).
size_t KeyEnd(std::string_view t, size_t i) {
  while (i < t.size() && (IsKeyChar(t[i]) || t[i] == '%')) ++i;
  return i;
}

int HexValue(char c) {
  if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return -1;
  return absl::ascii_isdigit(static_cast<unsigned char>(c))
             ? c - '0'
             : absl::ascii_tolower(static_cast<unsigned char>(c)) - 'a' + 10;
}

// True if `key`, percent-decoded, ends in "password" (any case).
bool IsSecretKey(std::string_view key) {
  std::string decoded;
  for (size_t i = 0; i < key.size(); ++i) {
    if (key[i] == '%' && i + 2 < key.size() &&
        HexValue(key[i + 1]) >= 0 && HexValue(key[i + 2]) >= 0) {
      decoded.push_back(
          static_cast<char>(HexValue(key[i + 1]) * 16 + HexValue(key[i + 2])));
      i += 2;
    } else {
      decoded.push_back(key[i]);
    }
  }
  return absl::EndsWithIgnoreCase(decoded, "password");
}

// The end of a conninfo value starting at `i`, as libpq reads it: quoted
// '...' with backslash escapes, or unquoted up to whitespace with backslash
// escapes (a quote or comma is part of it); in a URI's query (`uri_query`),
// also up to '&'.
size_t ValueEnd(std::string_view t, size_t i, bool uri_query) {
  const bool quoted = !uri_query && i < t.size() && t[i] == '\'';
  for (i += quoted ? 1 : 0; i < t.size(); ++i) {
    if (t[i] == '\\' && !uri_query) {
      ++i;
    } else if (quoted ? t[i] == '\'' : absl::ascii_isspace(t[i]) ||
                                            (uri_query && t[i] == '&')) {
      return quoted ? i + 1 : i;
    }
  }
  return t.size();
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

bool IsOutcomeUnknown(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnknown &&
         absl::StartsWith(status.message(), kOutcomeUnknown);
}

std::string RedactSecrets(std::string_view t) {
  std::string out;
  out.reserve(t.size());
  size_t i = 0;
  while (i < t.size()) {
    // key[ ]=[ ]value where the key ends in "password" (any case,
    // percent-decoded); the key starts after a non-key character.
    if ((IsKeyChar(t[i]) || t[i] == '%') &&
        (i == 0 || !(IsKeyChar(t[i - 1]) || t[i - 1] == '%'))) {
      const size_t key_end = KeyEnd(t, i);
      size_t j = key_end;
      while (j < t.size() && absl::ascii_isspace(t[j])) ++j;
      if (j < t.size() && t[j] == '=' &&
          IsSecretKey(t.substr(i, key_end - i))) {
        ++j;
        while (j < t.size() && absl::ascii_isspace(t[j])) ++j;
        out.append(t.substr(i, j - i));
        out.append("***");
        i = ValueEnd(t, j, i > 0 && (t[i - 1] == '?' || t[i - 1] == '&'));
        continue;
      }
      out.append(t.substr(i, key_end - i));
      i = key_end;
      continue;
    }
    // scheme://user:password@host. libpq's user info ends at the first '@'
    // or '/' (so a password may hold spaces and quotes); the last '@' before
    // a quote or whitespace is also taken (a password with an unencoded '/'
    // or '@'): over-redacting is the safe side.
    if (t[i] == ':' && t.substr(i, 3) == "://") {
      const size_t start = i + 3;
      size_t end = start;
      while (end < t.size() && t[end] != '"' && t[end] != '\'' &&
             !absl::ascii_isspace(t[end])) {
        ++end;
      }
      size_t at = t.substr(start, end - start).rfind('@');
      if (at == std::string_view::npos) {
        at = t.substr(start).find_first_of("@/");
        if (at != std::string_view::npos && t[start + at] != '@') {
          at = std::string_view::npos;
        }
      }
      if (at != std::string_view::npos) {
        const size_t colon = t.substr(start, at).find(':');
        if (colon != std::string_view::npos) {
          out.append(t.substr(i, 3 + colon + 1));
          out.append("***");
          i = start + at;  // From the '@'.
          continue;
        }
      }
    }
    out.push_back(t[i]);
    ++i;
  }
  return out;
}

std::optional<std::string> SqlState(const absl::Status& status) {
  absl::optional<absl::Cord> p = status.GetPayload(kSqlStatePayload);
  if (!p.has_value()) return std::nullopt;
  return std::string(*p);
}

Connection::Connection(pg_conn* conn) : conn_(conn) {}

Connection::~Connection() { Close(); }

void Connection::Close() {
  if (conn_ != nullptr) PQfinish(conn_);
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
  return std::unique_ptr<Connection>(new Connection(c));
}

bool Connection::idle_in_no_transaction() const {
  return ok() && PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

bool Connection::StillOpen() {
  // Bounded: a server that keeps sending notices is not waited out.
  for (int i = 0; i < 4 && ok(); ++i) {
    pollfd p{PQsocket(conn_), POLLIN, 0};
    if (poll(&p, 1, 0) != 1) break;  // Nothing waiting: open.
    if (PQconsumeInput(conn_) != 1) break;  // Closed: ok() is false.
    PQisBusy(conn_);  // Parses what came (a notice, an error).
  }
  return ok();
}

absl::Status Connection::Lost(const char* what) {
  absl::Status s(absl::StatusCode::kUnknown,
                 absl::StrCat(kOutcomeUnknown, what, ": ",
                              Trimmed(PQerrorMessage(conn_))));
  Close();
  return s;
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

  // The backstop segment, if any (see the file comment): [SET or RESET,
  // Sync,] statement[, Sync], all in one round trip. None in an aborted
  // transaction, where it could only fail.
  const PGTransactionStatusType tx_before = PQtransactionStatus(conn_);
  const std::optional<absl::Time> deadline = ctx.Deadline();
  std::string timeout_ms;
  const char* backstop_sql = nullptr;
  if (tx_before != PQTRANS_INERROR) {
    if (deadline.has_value()) {
      // The time left plus a small grace: the client's own cancel (which
      // reports exactly this Context's error) normally acts first.
      timeout_ms = std::to_string(std::max<int64_t>(
          1, absl::ToInt64Milliseconds(*deadline - absl::Now() +
                                       kBackstopGrace)));
      backstop_sql = kSetStatementTimeout;
    } else if (backstop_set_) {
      backstop_sql = kResetStatementTimeout;
    }
  }
  const bool pipeline = backstop_sql != nullptr;
  // From here on the statement may reach the server: a lost connection
  // leaves its outcome unknown.
  if (pipeline) {
    backstop_set_ = true;  // Until a RESET is known to have committed.
    const char* v[1] = {timeout_ms.c_str()};
    if (PQenterPipelineMode(conn_) != 1 ||
        PQsendQueryParams(conn_, backstop_sql, deadline.has_value() ? 1 : 0,
                          nullptr, v, nullptr, nullptr, 0) != 1 ||
        PQpipelineSync(conn_) != 1) {
      return Lost("send");
    }
  }
  if (PQsendQueryParams(conn_, sql_text.c_str(),
                        static_cast<int>(values.size()), nullptr,
                        values.data(), nullptr, nullptr, 0) != 1 ||
      (pipeline && PQpipelineSync(conn_) != 1)) {
    return Lost("send");
  }

  const int sock = PQsocket(conn_);
  bool canceled = false;  // This Context was done first.
  // The cancel waits for the backstop segment's end: a cancel that hit the
  // backstop would abort the caller's transaction under a statement the
  // server then runs anyway (a COMMIT would answer "ROLLBACK", no error).
  bool cancel_due = false;
  std::shared_ptr<CancelRequest> cancel_request;  // Null: none in flight.
  absl::Time drain_end = absl::InfiniteFuture();
  // Pipeline: the backstop's results, its Sync, the statement's results,
  // its Sync. Else: the statement's results, then null.
  int syncs = 0;
  const int user_segment = pipeline ? 1 : 0;
  // Waits for `events`; on the Context's descriptor, sends the cancel (or
  // marks it due, see cancel_due) and from then on waits only for the
  // server (at most kDrainLimit). Returns an error (outcome unknown; the
  // connection closed) if the connection is lost or the server does not
  // answer in time.
  auto wait = [&](short events) -> absl::Status {
    for (;;) {
      const Ready r =
          WaitFor(sock, events, canceled ? -1 : done->fd(), drain_end);
      if (r == Ready::kSocket) return absl::OkStatus();
      if (r == Ready::kTimeout) {
        Close();
        return absl::UnknownError(absl::StrCat(
            kOutcomeUnknown, "no answer within ",
            absl::FormatDuration(kDrainLimit), " of the cancel request"));
      }
      if (r == Ready::kError) return Lost("poll");
      canceled = true;
      drain_end = absl::Now() + kDrainLimit;
      if (syncs < user_segment) {
        cancel_due = true;
      } else {
        cancel_request = SendCancel(conn_);
      }
    }
  };

  for (;;) {
    const int f = PQflush(conn_);
    if (f < 0) return Lost("send");
    if (f == 0) break;
    if (absl::Status s = wait(POLLIN | POLLOUT); !s.ok()) return s;
    if (PQconsumeInput(conn_) != 1) return Lost("receive");
  }

  Result result;
  std::optional<absl::Status> query_error;
  std::optional<absl::Status> backstop_error;  // The backstop segment's.
  bool backstop_fired = false;
  for (;;) {
    while (PQisBusy(conn_)) {
      if (absl::Status s = wait(POLLIN); !s.ok()) return s;
      if (PQconsumeInput(conn_) != 1) return Lost("receive");
    }
    PGresult* res = PQgetResult(conn_);
    if (res == nullptr) {  // The end of one statement's results.
      if (!pipeline) break;  // Else its Sync follows.
      continue;
    }
    const ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      if (++syncs == 2) break;
      if (cancel_due) {  // The statement runs now (or has run).
        cancel_due = false;
        cancel_request = SendCancel(conn_);
      }
      continue;
    }
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      PQclear(res);
      Close();  // No way back to idle without running the COPY.
      return absl::InvalidArgumentError("postgres: COPY is not supported");
    }
    if (syncs != user_segment) {
      if (st == PGRES_FATAL_ERROR && !backstop_error) {
        backstop_error = SqlError(res);
      }
    } else if (st == PGRES_FATAL_ERROR) {
      if (!query_error) {
        query_error = SqlError(res);
        const char* msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        backstop_fired = deadline.has_value() && !backstop_error &&
                         SqlState(*query_error) == "57014" && msg != nullptr &&
                         strstr(msg, "statement timeout") != nullptr;
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
  if (pipeline) {
    if (PQexitPipelineMode(conn_) != 1) return Lost("pipeline");
    // A RESET that succeeded outside a transaction has committed.
    if (!deadline.has_value() && !backstop_error &&
        tx_before == PQTRANS_IDLE) {
      backstop_set_ = false;
    }
    // A backstop that failed inside the caller's transaction (someone
    // else's cancel) aborted it: the statement then ran in an aborted
    // transaction (a COMMIT is answered "ROLLBACK", no error). Its error is
    // the statement's.
    if (backstop_error && tx_before == PQTRANS_INTRANS) {
      query_error = backstop_error;
    }
  }

  // A cancel request the server has not processed yet could still hit the
  // next statement: wait for it (within the drain), else give the
  // connection up; the result stands either way.
  if (cancel_request != nullptr && !AwaitCancel(*cancel_request, drain_end)) {
    Close();
  }
  if (!query_error) return result;  // Done, even if the cancel came too late.
  if (SqlState(*query_error) == "57014") {
    if (backstop_fired) {
      // The server's copy of this Context's deadline fired first.
      return absl::DeadlineExceededError(absl::StrCat(
          "context deadline exceeded (", query_error->message(), ")"));
    }
    // Canceled on the server: by this Context's cancel, or by someone else
    // while this Context was done anyway; no effect either way.
    if (absl::Status s = ctx.Err(); !s.ok()) return s;
  }
  return *query_error;
}

absl::Status PoolOptions::Validate() const {
  if (max_open < 1) {
    return absl::InvalidArgumentError("PoolOptions.max_open must be >= 1");
  }
  if (max_idle > max_open) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PoolOptions.max_idle (", max_idle, ") must be <= max_open (",
        max_open, ")"));
  }
  if (!(reset_timeout > absl::ZeroDuration())) {
    return absl::InvalidArgumentError(
        "PoolOptions.reset_timeout must be > 0");
  }
  return absl::OkStatus();
}

// One Acquire waiting for a connection; lives on its stack.
struct Pool::Waiter {
  std::condition_variable cv;
  bool granted = false;  // A slot was handed over (with `conn` or not).
  std::unique_ptr<Connection> conn;  // Null: open a new one in the slot.
  bool done = false;     // The caller's Context is done.
};

absl::StatusOr<std::unique_ptr<Pool>> Pool::New(std::string conninfo,
                                                PoolOptions options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  return std::unique_ptr<Pool>(new Pool(std::move(conninfo), options));
}

Pool::~Pool() {
  std::vector<std::unique_ptr<Connection>> idle;
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle.swap(idle_);
  }
}

Pool::Lease& Pool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Return();
    pool_ = std::exchange(other.pool_, nullptr);
    conn_ = std::move(other.conn_);
  }
  return *this;
}

void Pool::Lease::Return() {
  if (pool_ == nullptr) return;
  std::exchange(pool_, nullptr)->Release(std::move(conn_));
}

absl::StatusOr<Pool::Lease> Pool::Acquire(const Context& ctx) {
  if (absl::Status s = ctx.Err(); !s.ok()) return s;
  std::unique_ptr<Connection> conn;
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      conn = std::move(idle_.back());
      idle_.pop_back();
    } else if (open_ < options_.max_open) {
      peak_open_ = std::max(peak_open_, ++open_);
    } else {
      Waiter w;
      waiters_.push_back(&w);
      lock.unlock();
      // Wakes this waiter when the Context is done (on another thread; the
      // handle's destructor waits for it, so `w` outlives it).
      AfterFuncHandle wake = AfterFunc(ctx, [this, &w] {
        std::lock_guard<std::mutex> l(mu_);
        w.done = true;
        w.cv.notify_one();
      });
      lock.lock();
      w.cv.wait(lock, [&w] { return w.granted || w.done; });
      if (!w.granted) {
        waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &w));
        lock.unlock();
        return ctx.Err();  // `wake` is destroyed unlocked.
      }
      conn = std::move(w.conn);
      lock.unlock();
      wake.Stop();
    }
  }
  if (conn != nullptr && !conn->StillOpen()) conn = nullptr;  // Its slot.
  if (conn == nullptr) {  // A slot: open a connection in it.
    absl::StatusOr<std::unique_ptr<Connection>> c =
        Connection::Connect(ctx, conninfo_);
    if (!c.ok()) {
      Release(nullptr);  // Frees the slot (or hands it to a waiter).
      return c.status();
    }
    conn = std::move(*c);
  }
  return Lease(this, std::move(conn));
}

void Pool::Release(std::unique_ptr<Connection> conn) {
  bool reset = false;
  if (conn != nullptr && conn->ok() && !conn->idle_in_no_transaction()) {
    // Inside a transaction (open, aborted, or its state unknown after a
    // cancel): never handed out as if clean.
    auto [ctx, cancel] = WithTimeout(Background(), options_.reset_timeout);
    reset = true;
    (void)conn->Query(ctx, "ROLLBACK");
  }
  if (conn != nullptr && !conn->idle_in_no_transaction()) conn = nullptr;
  std::unique_ptr<Connection> to_close;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (reset) ++resets_;
    if (!waiters_.empty()) {
      Waiter* w = waiters_.front();
      waiters_.pop_front();
      w->granted = true;
      w->conn = std::move(conn);  // The slot moves with it, null or not.
      w->cv.notify_one();
      return;
    }
    if (conn != nullptr && idle_.size() < options_.max_idle) {
      idle_.push_back(std::move(conn));
      return;
    }
    --open_;
    to_close = std::move(conn);
  }
  // Closed here, outside the lock.
}

absl::StatusOr<Result> Pool::Query(
    const Context& ctx, std::string_view sql,
    const std::vector<std::optional<std::string>>& params) {
  absl::StatusOr<Lease> lease = Acquire(ctx);
  if (!lease.ok()) return lease.status();
  return (*lease)->Query(ctx, sql, params);
}

Pool::Counts Pool::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Counts{.open = open_,
                .idle = idle_.size(),
                .waiting = waiters_.size(),
                .peak_open = peak_open_,
                .resets = resets_};
}

}  // namespace reqctx::postgres
