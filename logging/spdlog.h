// spdlog 1.10 (Debian's libspdlog-dev) with the request's fields on every
// line (logging/log_context.h): a pattern flag, %*, that writes
//   trace_id=... span_id=... method=... budget_ms=...
// for the Context current on the thread that formats the line.
//
//   auto logger = spdlog::stderr_color_mt("app");
//   reqctx::logging::UseContextPattern(*logger);   // kContextPattern
//   logger->info("charging card");
//   // [2026-12-06 08:30:00.123] [info] trace_id=4bf9... span_id=00f0...
//   //   method=/shop.v1.Cart/Checkout budget_ms=812 charging card
//
// Synchronous loggers only: spdlog formats a line on the thread that logs
// it, so the flag sees that thread's Current(). An async logger
// (spdlog::async_logger) formats on its worker thread, where no request is
// current: its lines show "-" for every field. There, log through a
// synchronous logger, or put CurrentLogFields() in the message yourself.
//
// Thread-safety: the formatter is used under the sink's lock, as every
// spdlog formatter; the functions here are safe from any thread. Never
// throws beyond what spdlog's own set_formatter may (std::bad_alloc).
#ifndef REQCTX_LOGGING_SPDLOG_H_
#define REQCTX_LOGGING_SPDLOG_H_

#include <spdlog/logger.h>
#include <spdlog/pattern_formatter.h>

#include <memory>
#include <string>

namespace reqctx::logging {

// The pattern flag character: "%*" in a pattern.
inline constexpr char kContextFlag = '*';
// spdlog's default line with the fields before the message.
inline constexpr const char* kContextPattern =
    "[%Y-%m-%d %H:%M:%S.%e] [%l] %* %v";

// The flag formatter behind %* (for a pattern_formatter of your own:
// formatter->add_flag<ContextFlagFormatter>(kContextFlag)).
class ContextFlagFormatter final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm& tm_time,
              spdlog::memory_buf_t& dest) override;
  std::unique_ptr<spdlog::custom_flag_formatter> clone() const override;
};

// A formatter for `pattern` with %* available.
std::unique_ptr<spdlog::formatter> MakeContextFormatter(
    const std::string& pattern = kContextPattern);

// logger.set_formatter(MakeContextFormatter(pattern)): every sink of
// `logger` writes the fields where the pattern has %*.
void UseContextPattern(spdlog::logger& logger,
                       const std::string& pattern = kContextPattern);

}  // namespace reqctx::logging

#endif  // REQCTX_LOGGING_SPDLOG_H_
