// LocalServer: a private PostgreSQL 15 for tests and demos.
//
// Start() runs `initdb` into a fresh directory under /tmp, then the server
// itself (the `postgres` binary of Debian's postgresql-15, not on PATH) as a
// child of this process, listening on 127.0.0.1 only, on a free port, with
// its Unix socket in that directory, and waits until it accepts connections.
// PostgreSQL refuses to run as root: when this process is root, initdb and
// the server run as the `postgres` user the Debian package creates.
//
// Stopping: the destructor (or Stop()) asks the server to shut down by its
// pid (SIGINT: fast shutdown, SIGKILL after 10 s), reaps it and removes the
// directory. If this process dies without running it, the kernel sends the
// server SIGQUIT (parent-death signal), so nothing outlives a crashed test.
//
// Thread-safety: Start and Stop are not concurrent with each other; the
// accessors are const. Lifetime: one object owns one server.
#ifndef REQCTX_INTEGRATIONS_POSTGRES_LOCAL_SERVER_H_
#define REQCTX_INTEGRATIONS_POSTGRES_LOCAL_SERVER_H_

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace reqctx::postgres {

class LocalServer {
 public:
  // Starts a server. kFailedPrecondition when this machine cannot run one at
  // all (no PostgreSQL 15 binaries, or root without a `postgres` user): the
  // message says why, for a test's skip line. Other errors (initdb or the
  // server failing, not ready within 60 s) carry the log's tail.
  static absl::StatusOr<std::unique_ptr<LocalServer>> Start();

  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;
  ~LocalServer();

  // Stops the server (by pid) and removes its directory. Idempotent.
  void Stop();

  // "host=127.0.0.1 port=N user=postgres dbname=postgres".
  const std::string& conninfo() const { return conninfo_; }
  int port() const { return port_; }
  // The server's log file (stdout and stderr of initdb and the server).
  std::string log_path() const { return dir_ + "/log"; }
  // The data directory (postgresql.conf, pg_hba.conf), owned by the user
  // the server runs as.
  std::string data_dir() const { return dir_ + "/data"; }
  pid_t pid() const { return pid_; }

 private:
  LocalServer() = default;
  std::string dir_;
  std::string conninfo_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace reqctx::postgres

#endif  // REQCTX_INTEGRATIONS_POSTGRES_LOCAL_SERVER_H_
