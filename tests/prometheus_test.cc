// A real Prometheus (Debian's /usr/bin/prometheus, installed by
// tools/setup.sh) scrapes a real echo server process on loopback: the test
// starts both (Prometheus with its own data directory in a temp dir and a
// free port; both stopped by pid, and killed by pid if the test fails), sends
// known traffic, and asks Prometheus's HTTP API with PromQL until it returns
// the expected reqctx_*_total values.
#include <grpcpp/grpcpp.h>

#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "context/context.h"
#include "gtest/gtest.h"
#include "interceptors/interceptors.h"
#include "interceptors/policy/policy_counters.h"
#include "proto/echo.grpc.pb.h"
#include "tests/child_process.h"
#include "tests/http_client.h"
#include "tests/test_timing.h"

namespace reqctx {
namespace {

using testing::ChildProcess;

constexpr absl::Duration kBound =
    reqctx::testing::PlainOrSanitized(absl::Seconds(60), absl::Seconds(120));
constexpr char kPrometheus[] = "/usr/bin/prometheus";

// The port after `marker` ("... on 127.0.0.1:PORT") in `out`, or 0.
int PortAfter(const std::string& out, const std::string& marker) {
  const size_t at = out.find(marker);
  if (at == std::string::npos) return 0;
  const size_t colon = out.find(':', at + marker.size());
  return colon == std::string::npos ? 0 : std::atoi(out.c_str() + colon + 1);
}

std::string UrlEncode(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '_' || c == '-' || c == '.') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

// The scalar of an instant query with one result ("value":[ts,"V"]), or
// nullopt (no result yet, or an error).
std::optional<double> Query(int port, const std::string& promql) {
  absl::StatusOr<testing::HttpResponse> r = testing::HttpGet(
      port, "/api/v1/query?query=" + UrlEncode(promql), absl::Seconds(10));
  if (!r.ok() || r->status != 200) return std::nullopt;
  const size_t v = r->body.find("\"value\":[");
  if (v == std::string::npos) return std::nullopt;
  const size_t q = r->body.find(",\"", v);
  if (q == std::string::npos) return std::nullopt;
  return std::strtod(r->body.c_str() + q + 2, nullptr);
}

// Polls `promql` (bounded) until it returns `want`; the last value seen.
std::optional<double> AwaitValue(int port, const std::string& promql,
                                 double want) {
  const absl::Time end = absl::Now() + kBound;
  std::optional<double> got;
  while (absl::Now() < end) {
    got = Query(port, promql);
    if (got == want) return got;
    absl::SleepFor(absl::Milliseconds(250));  // Scrapes come every 1 s.
  }
  return got;
}

TEST(PrometheusTest, ScrapesEchoServerAndAnswersPromQL) {
  ASSERT_EQ(access(kPrometheus, X_OK), 0)
      << kPrometheus << " missing: run tools/setup.sh (Debian package prometheus)";
  const std::string dir = testing::MakeTempDir("reqctx-prom-");
  ASSERT_FALSE(dir.empty());

  // The echo server, with its metrics endpoint on a free port.
  const std::string server_bin =
      absl::StrCat(std::getenv("TEST_SRCDIR"), "/", std::getenv("TEST_WORKSPACE"),
                   "/services/echo/server");
  ChildProcess echo;
  ASSERT_TRUE(echo.Start({server_bin, "--name=prom", "--port=0",
                          "--metrics_port=0"},
                         dir + "/echo.log"));
  ASSERT_TRUE(echo.WaitForOutput("listening on 127.0.0.1:", kBound))
      << echo.Output();
  const int echo_port = PortAfter(echo.Output(), "listening on ");
  const int metrics_port = PortAfter(echo.Output(), "metrics on ");
  ASSERT_GT(echo_port, 0);
  ASSERT_GT(metrics_port, 0);

  // Known traffic: 7 OK, 2 deadline exceeded.
  auto stub = ::echo::v1::Echo::NewStub(
      reqctx::CreateChannel(absl::StrCat("127.0.0.1:", echo_port),
                    grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 9; ++i) {
    const bool ok = i < 7;
    auto [ctx, cancel] = WithTimeout(Background(), ok ? absl::Seconds(20)
                                                      : absl::Milliseconds(50));
    std::unique_ptr<grpc::ClientContext> cc = NewClientContext(ctx);
    ::echo::v1::EchoRequest req;
    req.set_message("m");
    req.set_work_ms(ok ? 0 : 10000);
    ::echo::v1::EchoResponse resp;
    EXPECT_EQ(stub->Echo(cc.get(), req, &resp).error_code(),
              ok ? grpc::OK : grpc::DEADLINE_EXCEEDED);
  }

  // A real Prometheus scraping it every second.
  const int prom_port = testing::FreeLoopbackPort();
  ASSERT_GT(prom_port, 0);
  {
    std::ofstream config(dir + "/prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
           << "scrape_configs:\n  - job_name: reqctx_echo\n"
           << "    static_configs:\n      - targets: ['127.0.0.1:"
           << metrics_port << "']\n";
  }
  ChildProcess prometheus;
  ASSERT_TRUE(prometheus.Start(
      {kPrometheus, "--config.file=" + dir + "/prometheus.yml",
       "--storage.tsdb.path=" + dir + "/data",
       absl::StrCat("--web.listen-address=127.0.0.1:", prom_port)},
      dir + "/prometheus.log"));
  const absl::Time end = absl::Now() + kBound;
  bool ready = false;
  while (!ready && absl::Now() < end && prometheus.Running()) {
    absl::StatusOr<testing::HttpResponse> r =
        testing::HttpGet(prom_port, "/-/ready", absl::Seconds(5));
    ready = r.ok() && r->status == 200;
    if (!ready) absl::SleepFor(absl::Milliseconds(200));
  }
  ASSERT_TRUE(ready) << prometheus.Output();

  const std::string method = "method=\"/echo.v1.Echo/Echo\"";
  EXPECT_EQ(AwaitValue(prom_port,
                       "sum(reqctx_server_handled_total{code=\"OK\"," + method + "})",
                       7),
            7)
      << prometheus.Output();
  EXPECT_EQ(AwaitValue(prom_port,
                       "sum(reqctx_server_handled_total{code=\"DEADLINE_EXCEEDED\"," +
                           method + "})",
                       2),
            2);
  EXPECT_EQ(AwaitValue(prom_port,
                       "sum(reqctx_server_started_total{" + method + "})", 9),
            9);
  EXPECT_EQ(AwaitValue(prom_port,
                       "sum(reqctx_server_deadline_at_arrival_seconds_count{" +
                           method + "})",
                       9),
            9);
  EXPECT_EQ(AwaitValue(prom_port, "up{job=\"reqctx_echo\"}", 1), 1);
  // The policies' own counters are exposed too, one series per event.
  EXPECT_EQ(AwaitValue(prom_port, "count(reqctx_policy_events_total)",
                       policy::kPolicyCounterCount),
            policy::kPolicyCounterCount);

  EXPECT_NE(prometheus.Stop(kBound), -1);
  EXPECT_NE(echo.Stop(kBound), -1);
  std::system(("rm -rf '" + dir + "'").c_str());
}

}  // namespace
}  // namespace reqctx
