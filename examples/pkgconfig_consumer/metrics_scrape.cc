// An out-of-tree program using reqctx-metrics-server through pkg-config:
// serves one counter on a free loopback port with reqctx::MetricsServer,
// scrapes it once over HTTP (libcurl), and checks the counter is there.
// Exit status 0 on success, 1 (with the reason on stderr) otherwise.
#include <curl/curl.h>

#include <cstdio>
#include <memory>
#include <string>

#include "metrics/metrics.h"
#include "metrics/metrics_server.h"

namespace {

size_t Append(char* data, size_t size, size_t n, void* body) {
  static_cast<std::string*>(body)->append(data, size * n);
  return size * n;
}

// GET `url` with a 10 s bound; the body, or "" (reason on stderr).
std::string Get(const std::string& url) {
  std::string body;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return body;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    std::fprintf(stderr, "metrics_scrape: GET %s: %s\n", url.c_str(),
                 curl_easy_strerror(rc));
    body.clear();
  }
  curl_easy_cleanup(curl);
  return body;
}

}  // namespace

int main() {
  reqctx::metrics::Registry registry;
  auto family = registry.AddCounter("consumer_scrapes_total",
                                    "Scrapes made by this program.", {});
  if (!family.ok()) {
    std::fprintf(stderr, "metrics_scrape: %s\n",
                 family.status().ToString().c_str());
    return 1;
  }
  (*family)->WithLabels({}).Increment(3);

  reqctx::MetricsServerOptions options;  // 127.0.0.1, a free port.
  options.registry = &registry;
  auto server = reqctx::MetricsServer::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "metrics_scrape: %s\n",
                 server.status().ToString().c_str());
    return 1;
  }
  const std::string url =
      "http://127.0.0.1:" + std::to_string((*server)->port()) + "/metrics";
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const std::string body = Get(url);
  curl_global_cleanup();
  if (body.find("\nconsumer_scrapes_total 3\n") == std::string::npos) {
    std::fprintf(stderr, "metrics_scrape: no counter in:\n%s\n", body.c_str());
    return 1;
  }
  std::printf("metrics_scrape: scraped %s (%zu bytes)\n", url.c_str(),
              body.size());
  return 0;
}
