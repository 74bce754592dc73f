#include "logging/spdlog.h"

#include <string>

#include "context/current.h"
#include "logging/log_context.h"

namespace reqctx::logging {

void ContextFlagFormatter::format(const spdlog::details::log_msg&,
                                  const std::tm&, spdlog::memory_buf_t& dest) {
  // One buffer per thread: formatting a line allocates nothing once it has
  // grown to a line's fields.
  thread_local std::string fields;
  fields.clear();
  AppendLogFields(Current(), &fields);
  dest.append(fields.data(), fields.data() + fields.size());
}

std::unique_ptr<spdlog::custom_flag_formatter> ContextFlagFormatter::clone()
    const {
  return std::make_unique<ContextFlagFormatter>();
}

std::unique_ptr<spdlog::formatter> MakeContextFormatter(
    const std::string& pattern) {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<ContextFlagFormatter>(kContextFlag).set_pattern(pattern);
  return f;
}

void UseContextPattern(spdlog::logger& logger, const std::string& pattern) {
  logger.set_formatter(MakeContextFormatter(pattern));
}

}  // namespace reqctx::logging
