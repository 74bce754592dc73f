// PostgreSQL queries bound to a Context (libpq, Debian's libpq-dev).
//
//   auto conn = postgres::Connection::Connect(ctx, "host=... dbname=...");
//   absl::StatusOr<postgres::Result> r =
//       (*conn)->Query(ctx, "SELECT name FROM users WHERE id = $1", {"42"});
//
// A query is sent asynchronously and the calling thread waits, in one
// poll(), for the connection's socket and the Context's descriptor (DoneFd).
// When the Context is done first, a cancel request goes to the server
// (PQcancel), the call waits (at most kDrainLimit) until the server has
// stopped the query and the connection is idle again, and returns the
// Context's error: kDeadlineExceeded or kCancelled. The connection stays
// usable for the next query. When the Context has a deadline, the time left
// (plus 5 ms of grace, so the client's own cancel normally acts first) is
// also sent as a server-side backstop: `set_config('statement_timeout',
// <ms>, true)` (SET LOCAL) in the query's own transaction, in the same round
// trip (pipeline mode), so even a client that vanishes cannot leave the
// query running past the deadline. Inside a transaction the caller opened
// (BEGIN ... COMMIT through Query), that setting lasts until the transaction
// ends, so later statements of it keep that limit unless they have their own
// deadline. The cancel request itself is a short extra connection to the
// server (libpq's PQcancel, blocking: on loopback ~1 ms; to an unreachable
// server bounded only by the OS connect timeout).
//
// Errors:
//   * the Context's error (kDeadlineExceeded / kCancelled): the Context was
//     done before the query finished (the query was canceled on the server);
//   * SQL errors reported by the server carry its SQLSTATE (SqlState(status))
//     and a code by class: 42xxx (syntax, undefined objects, privileges)
//     kInvalidArgument, 23505 kAlreadyExists, other 23xxx
//     kFailedPrecondition, 40xxx (serialization, deadlock) kAborted, 53xxx
//     kResourceExhausted, 57014 not caused by this Context (someone else's
//     cancel, the session's own statement_timeout) kAborted, 08xxx / 57P0x
//     kUnavailable, anything else kUnknown; so an SQL error is never
//     mistaken for this Context's cancellation;
//   * kUnavailable: the connection is broken or lost (ok() turns false);
//   * kInvalidArgument: COPY (not supported here) or a parameter with a NUL.
//
// Thread-safety: a Connection serves one query at a time (as a PGconn);
// use one per thread or a pool. Query on one Connection from two threads at
// once is refused with kFailedPrecondition, never a crash.
// Lifetime: the Connection owns its PGconn (closed by the destructor); a
// Result owns copies of its values.
#ifndef REQCTX_INTEGRATIONS_POSTGRES_POSTGRES_H_
#define REQCTX_INTEGRATIONS_POSTGRES_POSTGRES_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "context/core.h"

struct pg_conn;
struct pg_cancel;

namespace reqctx::postgres {

// The outcome of one statement: its columns and rows (values as text, the
// server's output format; nullopt for SQL NULL) and the command's row count.
class Result {
 public:
  size_t rows() const { return rows_.size(); }
  size_t columns() const { return column_names_.size(); }
  const std::vector<std::string>& column_names() const {
    return column_names_;
  }
  // The value at (row, column); nullopt for NULL. Out-of-range indexes
  // return nullopt too (never a crash).
  const std::optional<std::string>& at(size_t row, size_t column) const;
  // Rows affected (INSERT/UPDATE/DELETE) or returned (SELECT); from the
  // command tag, 0 if it has none.
  int64_t affected_rows() const { return affected_rows_; }

 private:
  friend class Connection;
  std::vector<std::string> column_names_;
  std::vector<std::vector<std::optional<std::string>>> rows_;
  int64_t affected_rows_ = 0;
};

// The SQLSTATE of an SQL error returned by Query (e.g. "42601"), or nullopt
// for any other status (OK, a Context error, a broken connection).
std::optional<std::string> SqlState(const absl::Status& status);

class Connection {
 public:
  // How long a canceled query may take to stop on the server before the
  // connection is given up (closed; ok() false) rather than waited for.
  static constexpr absl::Duration kDrainLimit = absl::Seconds(5);

  // Connects with libpq `conninfo` (a "key=value ..." string or a
  // postgresql:// URI), without blocking past `ctx`: the connect waits on
  // the socket and the Context's descriptor. Returns the Context's error if
  // it is done first, kUnavailable (with libpq's message) if the server
  // cannot be reached or refuses.
  static absl::StatusOr<std::unique_ptr<Connection>> Connect(
      const Context& ctx, const std::string& conninfo);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Runs one SQL statement with text parameters ($1, $2, ...; nullopt is
  // NULL) under `ctx`, as the file comment describes. A Context already done
  // returns its error without sending anything.
  absl::StatusOr<Result> Query(
      const Context& ctx, std::string_view sql,
      const std::vector<std::optional<std::string>>& params = {});

  // False once the connection is broken (lost, or given up after a cancel
  // that did not take effect within kDrainLimit); every Query then returns
  // kUnavailable.
  bool ok() const;
  // The server process serving this connection (pg_stat_activity.pid).
  int backend_pid() const;

 private:
  Connection(pg_conn* conn, pg_cancel* cancel);
  void Close();

  pg_conn* conn_;
  pg_cancel* cancel_;
  std::atomic<bool> busy_{false};
};

// A set of Connections to one server for concurrent callers: Query takes an
// idle connection (or connects a new one, bound to the same Context), runs
// the query and keeps the connection for the next caller if it is still
// ok() and fewer than `max_idle` are idle.
//
// Thread-safety: Query may be called from any number of threads at once.
// Lifetime: must outlive its Query calls; closes the idle connections.
class Pool {
 public:
  explicit Pool(std::string conninfo, size_t max_idle = 8)
      : conninfo_(std::move(conninfo)), max_idle_(max_idle) {}
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Connection::Query on a pooled connection; a Connect failure is returned
  // as is (the Context's error, or kUnavailable).
  absl::StatusOr<Result> Query(
      const Context& ctx, std::string_view sql,
      const std::vector<std::optional<std::string>>& params = {});

  const std::string& conninfo() const { return conninfo_; }

 private:
  const std::string conninfo_;
  const size_t max_idle_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // Guarded by mu_.
};

}  // namespace reqctx::postgres

#endif  // REQCTX_INTEGRATIONS_POSTGRES_POSTGRES_H_
