// PostgreSQL queries bound to a Context (libpq, Debian's libpq-dev).
//
//   auto conn = postgres::Connection::Connect(ctx, "host=... dbname=...");
//   absl::StatusOr<postgres::Result> r =
//       (*conn)->Query(ctx, "SELECT name FROM users WHERE id = $1", {"42"});
//
// A query is sent asynchronously and the calling thread waits, in one
// poll(), for the connection's socket and the Context's descriptor (DoneFd).
//
// What a Query returns is what the server did. When the Context is done
// before the statement's result arrives, a cancel request goes to the server
// (PQcancel) and the call keeps reading the statement's result to its end
// (at most kDrainLimit), then:
//   * the server completed the statement anyway (the cancel came too late):
//     its result, OK -- a committed write is never reported as failed;
//   * the server canceled it (SQLSTATE 57014): the Context's error,
//     kDeadlineExceeded or kCancelled -- the statement had no effect (in a
//     transaction you opened, the transaction is now aborted: ROLLBACK);
//   * the statement failed with another SQL error: that error;
//   * the outcome cannot be known -- the connection was lost after the
//     statement was sent, or no answer came within kDrainLimit of the
//     cancel: kUnknown, message "postgres: outcome unknown: ..." (see
//     IsOutcomeUnknown); the connection is closed. A write may or may not
//     have happened: do not retry a non-idempotent statement blindly. (In a
//     transaction you opened, a lost connection rolls it back on the server,
//     unless the statement was its COMMIT.)
// The connection stays usable after a cancel. A cancel that comes too late
// cannot hit the next statement: Query returns only once the server has
// processed the cancel request (closed the cancel connection), and a
// server process that is waiting for its next statement ignores a cancel.
// The request is sent on a thread of its own (libpq's PQcancel has no
// timeout), so a server or network that never answers it holds the call
// no longer than kDrainLimit: the connection is then closed, and the
// result, if it came, still returned. At most 64 cancel requests wait for
// their servers per process; past that none is sent (kDrainLimit and the
// backstop below still bound the statement).
//
// Server-side backstop: when the Context has a deadline, the time left (plus
// 5 ms of grace, so the client's own cancel normally acts first) is also set
// as the session's `statement_timeout`, so even a client that stalls or
// vanishes cannot leave the statement running past the deadline. It is sent
// in the same round trip as the statement but as its own pipeline segment
// (`SELECT pg_catalog.set_config('statement_timeout', ms, false)`, Sync,
// statement, Sync; schema-qualified, whatever the search_path), so every
// statement runs exactly as it would alone: VACUUM, CREATE
// DATABASE and other statements that refuse a pipeline or a transaction
// block work with a deadline. This Context's cancel is sent only once the
// backstop's segment has ended: inside a transaction, a failed backstop
// aborts it, and a COMMIT in an aborted transaction is answered "ROLLBACK"
// with no error. A backstop that fails there anyway (canceled by someone
// else) is the call's error, never the statement's result. Inside an
// aborted transaction (PQTRANS_INERROR, where only ROLLBACK/COMMIT can run)
// no backstop is sent, so ROLLBACK with a deadline Context works. After a
// statement with a backstop, the next statement without a deadline first
// sends `RESET statement_timeout` (same round trip): statement_timeout
// belongs to this layer; give a session default through the conninfo
// (options='-c statement_timeout=...'), which RESET restores. Cost: a
// statement without a deadline after one without a deadline sends nothing
// extra; otherwise one extra tiny statement, no extra round trip (measured
// on loopback: see postgres_test BackstopCost).
//
// Errors:
//   * the Context's error (kDeadlineExceeded / kCancelled): the Context was
//     done before the statement finished and the server canceled it (or the
//     backstop fired), or the Context was done before anything was sent;
//   * kUnknown "postgres: outcome unknown: ...": as above;
//   * SQL errors reported by the server carry its SQLSTATE (SqlState(status))
//     and a code by class: 42xxx (syntax, undefined objects, privileges)
//     kInvalidArgument, 23505 kAlreadyExists, other 23xxx
//     kFailedPrecondition, 40xxx (serialization, deadlock) kAborted, 53xxx
//     kResourceExhausted, 57014 not caused by this Context (someone else's
//     cancel, the session's own statement_timeout) kAborted, 08xxx / 57P0x
//     kUnavailable, anything else kUnknown (without "outcome unknown"); so
//     an SQL error is never mistaken for this Context's cancellation;
//   * kUnavailable: the connection was already broken before anything was
//     sent (ok() false), or Connect failed;
//   * kInvalidArgument: COPY (not supported here) or a parameter with a NUL.
// Messages never contain a password: every libpq message is passed through
// RedactSecrets (libpq quotes a malformed conninfo or URI in its errors).
// They may name the server's host, port and user: they are for the
// server's log, not for untrusted clients.
//
// Thread-safety: a Connection serves one query at a time (as a PGconn);
// use one per thread or a Pool. Query on one Connection from two threads at
// once is refused with kFailedPrecondition, never a crash. A Pool may be
// used from any number of threads.
// Lifetime: the Connection owns its PGconn (closed by the destructor); a
// Result owns copies of its values. A Pool must outlive its Leases and
// Query calls.
#ifndef REQCTX_INTEGRATIONS_POSTGRES_POSTGRES_H_
#define REQCTX_INTEGRATIONS_POSTGRES_POSTGRES_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "context/core.h"

struct pg_conn;

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

// True for the kUnknown status Query returns when the statement's outcome
// cannot be known (see the file comment); false for anything else,
// including an SQL error mapped to kUnknown.
bool IsOutcomeUnknown(const absl::Status& status);

// `text` with every secret of a libpq conninfo replaced by "***": the value
// of any key ending in "password" (any case: password=, sslpassword=; any
// space around '='; quoted or not, read as libpq reads it -- backslash
// escapes, quotes and commas inside an unquoted value; in key=value form or
// as a URI query parameter, whose name may be percent-encoded) and the
// password of a URI's user info (postgresql://user:***@host; up to the
// '@', spaces and quotes included). Everything else is kept; when in
// doubt, more is redacted. For anything that may contain a conninfo before
// it is logged or returned.
std::string RedactSecrets(std::string_view text);

class Connection {
 public:
  // How long a canceled query may take to stop on the server before the
  // connection is given up (closed; ok() false) rather than waited for.
  static constexpr absl::Duration kDrainLimit = absl::Seconds(5);

  // Connects with libpq `conninfo` (a "key=value ..." string or a
  // postgresql:// URI), without blocking past `ctx`: the connect waits on
  // the socket and the Context's descriptor. Returns the Context's error if
  // it is done first, kUnavailable (with libpq's message, passwords
  // redacted) if the server cannot be reached or refuses. Whatever
  // `conninfo` leaves out (even all of it: "") libpq takes from the PG*
  // environment variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, ...) and the
  // password file (PGPASSFILE, default ~/.pgpass). With a Context that has
  // no deadline, an unreachable host is bounded only by the OS connect
  // timeout: set connect_timeout in the conninfo, or use a deadline.
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

  // False once the connection is broken (lost, given up after a cancel
  // that did not take effect within kDrainLimit, or after COPY); every
  // Query then returns kUnavailable.
  bool ok() const;
  // The server process serving this connection (pg_stat_activity.pid).
  int backend_pid() const;
  // True when ok() and no transaction is open on it (PQTRANS_IDLE): the
  // state a fresh connection is in. False inside BEGIN ... COMMIT, in an
  // aborted transaction, or when broken.
  bool idle_in_no_transaction() const;

 private:
  friend class Pool;
  explicit Connection(pg_conn* conn);
  void Close();
  // For an idle connection: reads what is waiting (notices, or the error a
  // server sends before closing it) without a round trip; false if the
  // server has closed it (it is then broken: ok() false).
  bool StillOpen();
  // Closes the connection; kUnknown "postgres: outcome unknown: <what>: <libpq
  // message>".
  absl::Status Lost(const char* what);

  pg_conn* conn_;
  // The session's statement_timeout may still hold a backstop (see the file
  // comment); only touched by the Query that holds busy_.
  bool backstop_set_ = false;
  std::atomic<bool> busy_{false};
};

// Limits of a Pool.
struct PoolOptions {
  // The most connections open at once: in use, idle, or being opened. Keep
  // the sum over every process well under the server's max_connections
  // (PostgreSQL's default: 100). Must be >= 1.
  size_t max_open = 10;
  // The most idle connections kept for reuse; more are closed when
  // returned. Must be <= max_open.
  size_t max_idle = 10;
  // How long the ROLLBACK that cleans a connection returned inside a
  // transaction may take (under Background(), not the caller's Context);
  // a connection not clean by then is closed. Must be > 0.
  absl::Duration reset_timeout = absl::Seconds(2);

  // OK, or kInvalidArgument naming the bad field.
  absl::Status Validate() const;
};

// A bounded set of Connections to one server for concurrent callers.
//
// Acquire hands out an idle connection, or opens a new one (bound to the
// caller's Context) while fewer than max_open are open; otherwise it waits,
// first come first served, until a connection is returned -- for as long as
// the caller's Context allows: a deadline or cancel ends the wait promptly
// with the Context's error. A returned connection goes to the longest
// waiter (one waiter is woken per connection), else back to the idle set.
// So a Pool never has more than max_open connections open at once, whatever
// the number of callers.
//
// A connection the server closed while it was idle in the pool (a restart,
// an idle timeout, pg_terminate_backend) is not handed out: its socket is
// checked (no round trip) and a new connection opened in its place.
//
// A connection is returned clean or not at all: one returned inside a
// transaction (BEGIN without COMMIT, a transaction aborted by an error or a
// cancel) gets a ROLLBACK under Background() bounded by reset_timeout
// before anyone else gets it, and is closed if that does not leave it
// idle; a broken one is closed (its slot is freed for a new connection).
//
// Thread-safety: Acquire, Query and Stats may be called from any number of
// threads at once; a Lease is used by one thread at a time.
// Lifetime: the Pool must outlive every Lease and every Acquire/Query call;
// its destructor closes the idle connections.
class Pool {
 public:
  // A pool for `conninfo` (libpq; see Connection::Connect), or
  // kInvalidArgument naming the bad option.
  static absl::StatusOr<std::unique_ptr<Pool>> New(std::string conninfo,
                                                   PoolOptions options = {});
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool();

  // A connection taken from the pool; returns it (as the class comment
  // says) when destroyed. Move-only; a moved-from Lease holds nothing.
  class Lease {
   public:
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)),
          conn_(std::move(other.conn_)) {}
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() { Return(); }

    Connection& operator*() const { return *conn_; }
    Connection* operator->() const { return conn_.get(); }
    // Returns the connection to the pool now (idempotent).
    void Return();

   private:
    friend class Pool;
    Lease(Pool* pool, std::unique_ptr<Connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  // A connection, as the class comment describes. Errors: the Context's
  // error (done before or while waiting or connecting), or Connect's
  // kUnavailable. Never waits past the Context.
  absl::StatusOr<Lease> Acquire(const Context& ctx);

  // Acquire, then Connection::Query on that connection; an Acquire failure
  // is returned as is.
  absl::StatusOr<Result> Query(
      const Context& ctx, std::string_view sql,
      const std::vector<std::optional<std::string>>& params = {});

  struct Counts {
    size_t open = 0;       // Connections open or being opened now.
    size_t idle = 0;       // Of those, idle in the pool.
    size_t waiting = 0;    // Acquire calls waiting for a connection.
    size_t peak_open = 0;  // The most `open` has ever been.
    uint64_t resets = 0;   // Connections cleaned with a ROLLBACK.
  };
  Counts Stats() const;

  const std::string& conninfo() const { return conninfo_; }
  const PoolOptions& options() const { return options_; }

 private:
  struct Waiter;
  Pool(std::string conninfo, PoolOptions options)
      : conninfo_(std::move(conninfo)), options_(options) {}
  // Gives `conn` (null: only its slot) to the longest waiter, else keeps it
  // idle or closes it. Cleans it first (see the class comment).
  void Release(std::unique_ptr<Connection> conn);

  const std::string conninfo_;
  const PoolOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // Guarded by mu_.
  std::deque<Waiter*> waiters_;                    // Guarded by mu_.
  size_t open_ = 0;                                // Guarded by mu_.
  size_t peak_open_ = 0;                           // Guarded by mu_.
  uint64_t resets_ = 0;                            // Guarded by mu_.
};

}  // namespace reqctx::postgres

#endif  // REQCTX_INTEGRATIONS_POSTGRES_POSTGRES_H_
