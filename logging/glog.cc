#include "logging/glog.h"

#include <string>

#include "absl/strings/str_format.h"
#include "context/current.h"
#include "logging/log_context.h"

namespace reqctx::logging {

void InitGoogleLoggingWithContext(const char* argv0) {
  google::InitGoogleLogging(argv0, &ContextPrefix, nullptr);
}

void ContextPrefix(std::ostream& s, const google::LogMessageInfo& info,
                   void*) {
  thread_local std::string line;
  line.clear();
  const google::LogMessageTime& t = info.time;
  absl::StrAppendFormat(&line, "%c%04d%02d%02d %02d:%02d:%02d.%06d %5d %s:%d] ",
                        info.severity[0], 1900 + t.year(), 1 + t.month(),
                        t.day(), t.hour(), (t.min)(), t.sec(), t.usec(),
                        info.thread_id, info.filename, info.line_number);
  AppendLogFields(Current(), &line);
  s << line;
}

}  // namespace reqctx::logging
