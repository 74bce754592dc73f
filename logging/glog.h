// glog 0.6 (Debian's libgoogle-glog-dev) with the request's fields on every
// line (logging/log_context.h), through glog's custom prefix: glog's usual
// prefix, then the fields of the Context current on the thread that logs.
//
//   reqctx::logging::InitGoogleLoggingWithContext(argv[0]);
//   LOG(INFO) << "charging card";
//   // I20261206 08:30:00.123456  4242 cart.cc:42] trace_id=4bf9...
//   //   span_id=00f0... method=/shop.v1.Cart/Checkout budget_ms=812
//   //   charging card
//
// The prefix goes on every line glog writes (stderr and its log files; a
// google::LogSink gets the message without any prefix, as glog always
// does). glog builds the prefix in LOG()'s own statement, on the logging
// thread, so the fields are that thread's Current() (see log_context.h).
// glog takes a prefix only at initialization: call this instead of
// google::InitGoogleLogging, once per process.
//
// Thread-safety: ContextPrefix is safe from any thread (glog calls it from
// every thread that logs); InitGoogleLoggingWithContext has glog's rules
// (once, before logging from other threads). Never throws.
#ifndef REQCTX_LOGGING_GLOG_H_
#define REQCTX_LOGGING_GLOG_H_

#include <glog/logging.h>

#include <ostream>

namespace reqctx::logging {

// google::InitGoogleLogging(argv0, &ContextPrefix, nullptr).
void InitGoogleLoggingWithContext(const char* argv0);

// glog's prefix ("I20261206 08:30:00.123456  4242 file.cc:42]") followed by
// a space and the fields, for google::InitGoogleLogging's prefix callback;
// `data` is unused.
void ContextPrefix(std::ostream& s, const google::LogMessageInfo& info,
                   void* data);

}  // namespace reqctx::logging

#endif  // REQCTX_LOGGING_GLOG_H_
