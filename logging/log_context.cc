#include "logging/log_context.h"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/container/node_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "context/current.h"
#include "w3c/trace_propagation.h"

namespace reqctx::logging {
namespace {

// The method key holds an interned name: a pointer to a string that lives
// for the process.
inline constexpr Key<const std::string*> kLogMethodKey("reqctx.log_method");

// What a field's value may hold: printable ASCII but space.
bool IsTokenChar(char c) { return c >= 0x21 && c <= 0x7E; }

// `method` as it is logged: printable ASCII, at most kMaxLogMethodBytes.
std::string Sanitize(std::string_view method) {
  std::string s(method.substr(0, kMaxLogMethodBytes));
  for (char& c : s) {
    if (!IsTokenChar(c)) c = '?';
  }
  return s;
}

// The process-wide table of method names. Each thread remembers the last
// name it interned, so a server serving one method takes no lock per call.
const std::string* Intern(std::string_view method) {
  thread_local const std::string* last = nullptr;
  if (last != nullptr && *last == method) return last;
  static std::mutex mu;
  static auto* names = new absl::node_hash_set<std::string>();
  static const std::string* const other = new std::string("(other)");
  const std::string clean = Sanitize(method);
  std::lock_guard<std::mutex> lock(mu);
  auto it = names->find(clean);
  if (it == names->end()) {
    if (names->size() >= kMaxLogMethods) return other;
    it = names->insert(clean).first;
  }
  // Only a name equal to what was asked for may be reused without a look-up
  // (a sanitized one is not).
  if (*it == method) last = &*it;
  return &*it;
}

void AppendOrDash(std::string_view value, std::string* out) {
  if (value.empty()) {
    out->push_back('-');
  } else {
    out->append(value.data(), value.size());
  }
}

// A trace or span id as it is logged: as a method name is (Sanitize), cut
// to kMaxLogIdBytes; "-" if empty. Copies a valid id unchanged.
void AppendId(std::string_view id, std::string* out) {
  id = id.substr(0, kMaxLogIdBytes);
  if (std::all_of(id.begin(), id.end(), IsTokenChar)) {
    AppendOrDash(id, out);
    return;
  }
  for (char c : id) out->push_back(IsTokenChar(c) ? c : '?');
}

}  // namespace

Context WithLogMethod(const Context& parent, std::string_view method) {
  return WithValue(parent, kLogMethodKey, Intern(method));
}

std::string_view LogMethodOf(const Context& ctx) {
  const std::string* const* m = ctx.Value(kLogMethodKey);
  return m == nullptr ? std::string_view() : std::string_view(**m);
}

ServerCallRules WithLogMethodRule(ServerCallRules rules) {
  rules.values =
      [inner = std::move(rules.values)](
          std::string_view method, const Context& ctx,
          const std::multimap<grpc::string_ref, grpc::string_ref>& metadata,
          const grpc::ServerContextBase& sc) {
        Context c = inner ? inner(method, ctx, metadata, sc) : ctx;
        return WithLogMethod(c, method);
      };
  return rules;
}

void AppendLogFields(const Context& ctx, std::string* out) {
  const TraceContext* tc = internal::FindTraceContext(ctx);
  out->append("trace_id=");
  AppendId(tc != nullptr ? std::string_view(tc->trace_id) : "", out);
  out->append(" span_id=");
  AppendId(tc != nullptr ? std::string_view(tc->span_id) : "", out);
  out->append(" method=");
  AppendOrDash(LogMethodOf(ctx), out);
  out->append(" budget_ms=");
  if (std::optional<absl::Duration> left = ctx.TimeLeft()) {
    absl::StrAppend(out, std::max<int64_t>(0, absl::ToInt64Milliseconds(*left)));
  } else {
    out->append("none");
  }
}

std::string CurrentLogFields() {
  std::string out;
  AppendLogFields(Current(), &out);
  return out;
}

}  // namespace reqctx::logging
