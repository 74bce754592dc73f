#include "ledger/ledger.h"

#include <algorithm>
#include <array>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/stubs/common.h"
#include "google/protobuf/wire_format_lite.h"
#include "google/rpc/error_details.pb.h"
#include "google/rpc/status.pb.h"
#include "reqctx/v1/ledger.pb.h"
#include "w3c/header_rules.h"

namespace reqctx {
namespace {

constexpr int kMaxGrpcCode = kStatusCodes - 1;
constexpr size_t kMessageCap = 1024;
// Durations beyond ~11.6 days are not a real call's; the decoder refuses them.
constexpr int64_t kMaxMicros = int64_t{1000000} * 1000000;

// Debian's abseil has its own string_view.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

int64_t Micros(absl::Duration d) { return absl::ToInt64Microseconds(d); }

// Bytes gRPC would refuse in a text header (and a log line should not
// carry) become '?'; the string is cut to kLedgerMaxString.
std::string Clean(std::string_view s) {
  std::string out(s.substr(0, kLedgerMaxString));
  for (char& c : out) {
    if (!IsLegalGrpcHeaderValue(std::string_view(&c, 1))) c = '?';
  }
  return out;
}

// ---- struct -> proto -------------------------------------------------------

void ToProto(const LedgerHop& h, reqctx::v1::Hop* p);

void ToProto(const LedgerOutbound& o, reqctx::v1::Outbound* p) {
  p->set_method(Clean(o.method));
  if (o.budget.has_value()) p->set_budget_us(Micros(*o.budget));
  p->set_took_us(Micros(o.took));
  p->set_code(o.code);
  p->set_sent(o.sent);
  if (!o.ledger.empty()) ToProto(o.ledger.front(), p->mutable_ledger());
  p->set_summarised_hops(o.summarised_hops);
  if (!o.peer.empty()) p->set_peer(Clean(o.peer));
}

void ToProto(const LedgerHop& h, reqctx::v1::Hop* p) {
  p->set_method(Clean(h.method));
  p->set_host(Clean(h.host));
  if (h.budget.has_value()) p->set_budget_us(Micros(*h.budget));
  p->set_queued_us(Micros(h.queued));
  p->set_work_us(Micros(h.work));
  p->set_outbound_us(Micros(h.outbound_wait));
  if (h.reply_margin.has_value()) {
    p->set_reply_margin_us(Micros(*h.reply_margin));
  }
  if (h.policy.min_budget != absl::ZeroDuration() ||
      h.policy.deadline_change != LedgerPolicy::DeadlineChange::kKept ||
      h.policy.shed) {
    reqctx::v1::Policy* pol = p->mutable_policy();
    pol->set_min_budget_us(Micros(h.policy.min_budget));
    pol->set_deadline_change(static_cast<reqctx::v1::Policy::DeadlineChange>(
        h.policy.deadline_change));
    pol->set_policy_budget_us(Micros(h.policy.policy_budget));
    pol->set_shed(h.policy.shed);
  }
  p->set_code(h.code);
  p->set_cause(static_cast<reqctx::v1::Cause>(h.cause));
  p->set_deadline_set_by(Clean(h.deadline_set_by));
  for (const LedgerOutbound& o : h.outbound) ToProto(o, p->add_outbound());
  p->set_omitted_outbound(h.omitted_outbound);
}

// ---- proto -> struct, validating -------------------------------------------

struct DecodeBudget {
  int hops = 0;
  int outbound = 0;
};

bool ValidString(const std::string& s) {
  return s.size() <= kLedgerMaxString && IsLegalGrpcHeaderValue(s);
}
bool ValidSpan(int64_t us) { return us >= 0 && us <= kMaxMicros; }
bool ValidSigned(int64_t us) { return us >= -kMaxMicros && us <= kMaxMicros; }
bool ValidCode(int32_t c) { return c >= 0 && c <= kMaxGrpcCode; }

absl::Status Bad(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("budget ledger: ", Sv(what)));
}

absl::Status FromProto(const reqctx::v1::Hop& p, int depth, DecodeBudget& b,
                       LedgerHop& h);

absl::Status FromProto(const reqctx::v1::Outbound& p, int depth,
                       DecodeBudget& b, LedgerOutbound& o) {
  if (++b.outbound > kLedgerMaxOutbound) return Bad("too many outbound calls");
  if (!ValidString(p.method())) return Bad("bad outbound method");
  if (!ValidString(p.peer())) return Bad("bad outbound peer");
  if (p.has_budget_us() && !ValidSigned(p.budget_us())) return Bad("bad budget");
  if (!ValidSpan(p.took_us())) return Bad("bad outbound time");
  if (!ValidCode(p.code())) return Bad("bad outbound code");
  o.method = p.method();
  if (p.has_budget_us()) o.budget = absl::Microseconds(p.budget_us());
  o.took = absl::Microseconds(p.took_us());
  o.code = p.code();
  o.sent = p.sent();
  o.summarised_hops = p.summarised_hops();
  o.peer = p.peer();
  if (p.has_ledger()) {
    o.ledger.emplace_back();
    absl::Status s = FromProto(p.ledger(), depth + 1, b, o.ledger.back());
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status FromProto(const reqctx::v1::Hop& p, int depth, DecodeBudget& b,
                       LedgerHop& h) {
  if (depth >= kLedgerMaxDepth) return Bad("nested too deep");
  if (++b.hops > kLedgerMaxHops) return Bad("too many hops");
  if (!ValidString(p.method()) || !ValidString(p.host()) ||
      !ValidString(p.deadline_set_by())) {
    return Bad("bad hop string");
  }
  if ((p.has_budget_us() && !ValidSigned(p.budget_us())) ||
      (p.has_reply_margin_us() && !ValidSigned(p.reply_margin_us())) ||
      !ValidSpan(p.queued_us()) || !ValidSpan(p.work_us()) ||
      !ValidSpan(p.outbound_us()) || !ValidSpan(p.policy().min_budget_us()) ||
      !ValidSigned(p.policy().policy_budget_us())) {
    return Bad("bad hop duration");
  }
  if (!ValidCode(p.code())) return Bad("bad hop code");
  h.method = p.method();
  h.host = p.host();
  if (p.has_budget_us()) h.budget = absl::Microseconds(p.budget_us());
  h.queued = absl::Microseconds(p.queued_us());
  h.work = absl::Microseconds(p.work_us());
  h.outbound_wait = absl::Microseconds(p.outbound_us());
  if (p.has_reply_margin_us()) {
    h.reply_margin = absl::Microseconds(p.reply_margin_us());
  }
  h.policy.min_budget = absl::Microseconds(p.policy().min_budget_us());
  int change = p.policy().deadline_change();
  h.policy.deadline_change =
      change >= 0 && change <= 2
          ? static_cast<LedgerPolicy::DeadlineChange>(change)
          : LedgerPolicy::DeadlineChange::kKept;
  h.policy.policy_budget = absl::Microseconds(p.policy().policy_budget_us());
  h.policy.shed = p.policy().shed();
  h.code = p.code();
  h.cause = CauseFromNumber(p.cause()).value_or(CauseKind::kNone);
  h.deadline_set_by = p.deadline_set_by();
  h.omitted_outbound = p.omitted_outbound();
  h.outbound.resize(p.outbound_size());
  for (int i = 0; i < p.outbound_size(); ++i) {
    absl::Status s = FromProto(p.outbound(i), depth, b, h.outbound[i]);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// ---- UTF-8, before protobuf parses ------------------------------------------

// protobuf's generated parser logs an ERROR line for every proto3 string
// field holding invalid UTF-8 (then fails): hostile details would write one
// log line per call. So the bytes are walked on the wire first, by the
// schema of the messages reqctx parses (which fields are strings, which are
// messages), and refused quietly.
struct WireSchema {
  std::array<int, 3> strings;  // Field numbers; 0: none.
  int message_field;           // 0: none.
  const WireSchema* message;
};

extern const WireSchema kHopWire;
constexpr WireSchema kOutboundWire{{1, 0, 0}, 6, &kHopWire};
constexpr WireSchema kHopWire{{1, 2, 11}, 12, &kOutboundWire};
constexpr WireSchema kBudgetLedgerWire{{0, 0, 0}, 2, &kHopWire};
constexpr WireSchema kMapEntryWire{{1, 2, 0}, 0, nullptr};
constexpr WireSchema kErrorInfoWire{{1, 2, 0}, 3, &kMapEntryWire};
constexpr WireSchema kDebugInfoWire{{1, 2, 0}, 0, nullptr};
constexpr WireSchema kAnyWire{{1, 0, 0}, 0, nullptr};  // value: bytes.
constexpr WireSchema kStatusWire{{2, 0, 0}, 3, &kAnyWire};

// False only if a string field of `schema` (at any depth up to `depth`
// levels) holds invalid UTF-8; malformed bytes are left to the parser.
bool Utf8Clean(google::protobuf::io::CodedInputStream& in,
               const WireSchema& schema, int depth) {
  using Wire = google::protobuf::internal::WireFormatLite;
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return true;
    const int field = static_cast<int>(tag >> 3);
    if (Wire::GetTagWireType(tag) == Wire::WIRETYPE_LENGTH_DELIMITED) {
      const bool is_string =
          std::find(schema.strings.begin(), schema.strings.end(), field) !=
          schema.strings.end();
      const bool is_message =
          schema.message != nullptr && field == schema.message_field;
      if (is_string || is_message) {
        uint32_t len = 0;
        if (!in.ReadVarint32(&len)) return true;
        if (is_string) {
          std::string v;
          if (!in.ReadString(&v, static_cast<int>(len))) return true;
          if (!google::protobuf::internal::IsStructurallyValidUTF8(v)) {
            return false;
          }
          continue;
        }
        if (depth <= 0) return true;  // The parser's depth bound refuses it.
        const auto limit = in.PushLimit(static_cast<int>(len));
        if (!Utf8Clean(in, *schema.message, depth - 1)) return false;
        in.PopLimit(limit);
        continue;
      }
    }
    if (!Wire::SkipField(&in, tag)) return true;
  }
}

bool Utf8Clean(std::string_view bytes, const WireSchema& schema, int depth) {
  google::protobuf::io::CodedInputStream in(
      reinterpret_cast<const uint8_t*>(bytes.data()),
      static_cast<int>(bytes.size()));
  return Utf8Clean(in, schema, depth);
}

// ---- summarising -----------------------------------------------------------

int Depth(const reqctx::v1::Hop& h) {
  int d = 0;
  for (const reqctx::v1::Outbound& o : h.outbound()) {
    if (o.has_ledger()) d = std::max(d, 1 + Depth(o.ledger()));
  }
  return d;
}

// Hops in `h`'s subtree, counting those already summarised beneath it.
uint32_t HopsIn(const reqctx::v1::Hop& h) {
  uint32_t n = 1;
  for (const reqctx::v1::Outbound& o : h.outbound()) {
    n += o.summarised_hops();
    if (o.has_ledger()) n += HopsIn(o.ledger());
  }
  return n;
}

// Hops actually present in `h`'s subtree (not counting summarised ones).
uint32_t PresentHops(const reqctx::v1::Hop& h) {
  uint32_t n = 1;
  for (const reqctx::v1::Outbound& o : h.outbound()) {
    if (o.has_ledger()) n += PresentHops(o.ledger());
  }
  return n;
}

// Clears the ledgers at depth `target` below `h` (at depth `depth`); returns
// the hops removed (present ones only).
uint32_t PruneLevel(reqctx::v1::Hop* h, int depth, int target) {
  uint32_t removed = 0;
  for (reqctx::v1::Outbound& o : *h->mutable_outbound()) {
    if (!o.has_ledger()) continue;
    if (depth + 1 == target) {
      // The call counts every hop lost beneath it; the top counts only
      // those lost now (earlier ones are counted already).
      removed += PresentHops(o.ledger());
      o.set_summarised_hops(o.summarised_hops() + HopsIn(o.ledger()));
      o.clear_ledger();
    } else {
      removed += PruneLevel(o.mutable_ledger(), depth + 1, target);
    }
  }
  return removed;
}

uint32_t CountOutbound(const reqctx::v1::Hop& h) {
  uint32_t n = static_cast<uint32_t>(h.outbound_size());
  for (const reqctx::v1::Outbound& o : h.outbound()) {
    if (o.has_ledger()) n += CountOutbound(o.ledger());
  }
  return n;
}

// True if DecodeLedgerDetails' bounds accept `l`'s shape.
bool WithinDecodeBounds(const reqctx::v1::BudgetLedger& l) {
  return Depth(l.root()) < kLedgerMaxDepth &&
         PresentHops(l.root()) <= static_cast<uint32_t>(kLedgerMaxHops) &&
         CountOutbound(l.root()) <= static_cast<uint32_t>(kLedgerMaxOutbound);
}

// One step making `l` smaller; false when nothing is left to take out.
bool Shrink(reqctx::v1::BudgetLedger* l) {
  reqctx::v1::Hop* root = l->mutable_root();
  int depth = Depth(*root);
  if (depth > 0) {
    l->set_summarised_hops(l->summarised_hops() + PruneLevel(root, 0, depth));
    return true;
  }
  if (root->outbound_size() > 0) {
    root->mutable_outbound()->RemoveLast();
    root->set_omitted_outbound(root->omitted_outbound() + 1);
    return true;
  }
  return false;
}

void AddAny(google::rpc::Status* st, std::string_view type_url,
            const google::protobuf::Message& m) {
  google::protobuf::Any* any = st->add_details();
  any->set_type_url(std::string(type_url));
  m.SerializeToString(any->mutable_value());
}

bool IsOurs(const google::protobuf::Any& any) {
  if (any.type_url() == kLedgerTypeUrl) return true;
  // (Not UTF-8: not reqctx's, and not parsed.)
  if (any.type_url() == kErrorInfoTypeUrl) {
    if (!Utf8Clean(any.value(), kErrorInfoWire, 2)) return false;
    google::rpc::ErrorInfo e;
    return e.ParseFromString(any.value()) && e.domain() == kLedgerDomain;
  }
  if (any.type_url() == kDebugInfoTypeUrl) {
    if (!Utf8Clean(any.value(), kDebugInfoWire, 1)) return false;
    google::rpc::DebugInfo d;
    return d.ParseFromString(any.value()) && d.stack_entries_size() == 1 &&
           d.stack_entries(0) == kLedgerDebugMarker;
  }
  return false;
}

// Appends reqctx's three details to `base` (whose own details are kept),
// summarising `ledger` until the whole fits kLedgerDetailsCap; nullopt if
// even the ErrorInfo alone does not fit.
std::optional<std::string> Compose(const google::rpc::Status& base,
                                   const Ledger& ledger) {
  reqctx::v1::BudgetLedger l;
  l.set_version(1);
  l.set_summarised_hops(ledger.summarised_hops);
  ToProto(ledger.root, l.mutable_root());

  google::rpc::ErrorInfo info;
  info.set_domain(std::string(kLedgerDomain));
  info.set_reason(std::string(CauseName(ledger.root.cause)));
  (*info.mutable_metadata())["hop"] =
      Clean(ledger.root.host.empty() ? ledger.root.method : ledger.root.host);
  if (!ledger.root.deadline_set_by.empty()) {
    (*info.mutable_metadata())["deadline_set_by"] =
        Clean(ledger.root.deadline_set_by);
  }

  google::rpc::DebugInfo debug;
  debug.add_stack_entries(std::string(kLedgerDebugMarker));
  std::string line = LedgerLine(ledger);
  if (line.size() > kLedgerLineCap) {
    line.resize(kLedgerLineCap - 3);
    line += "...";
  }
  debug.set_detail(std::move(line));

  bool with_debug = true;
  bool with_ledger = true;
  for (;;) {
    google::rpc::Status st = base;
    if (with_ledger) AddAny(&st, kLedgerTypeUrl, l);
    AddAny(&st, kErrorInfoTypeUrl, info);
    if (with_debug) AddAny(&st, kDebugInfoTypeUrl, debug);
    if (st.ByteSizeLong() <= kLedgerDetailsCap &&
        (!with_ledger || WithinDecodeBounds(l))) {
      return st.SerializeAsString();
    }
    if (with_ledger && Shrink(&l)) continue;
    if (with_debug) {
      with_debug = false;
    } else if (with_ledger) {
      with_ledger = false;
    } else {
      return std::nullopt;
    }
  }
}

// ---- the readable line -----------------------------------------------------

// A budget: whole milliseconds from 100 ms up ("250 ms", "80.0 ms").
std::string Ms(absl::Duration d) {
  double ms = absl::ToDoubleMilliseconds(d);
  if (ms >= 100 || ms <= -100) return absl::StrFormat("%.0f ms", ms);
  return absl::StrFormat("%.1f ms", ms);
}

// A time spent: always to a tenth of a millisecond ("150.2 ms").
std::string Spent(absl::Duration d) {
  return absl::StrFormat("%.1f ms", absl::ToDoubleMilliseconds(d));
}

// A code's name for the readable line; "code N" outside 0..16.
std::string CodeText(int code) {
  if (code >= 0 && code < kStatusCodes) return std::string(CodeName(code));
  return absl::StrCat("code ", code);
}

// A nested ledger's transit is shown from this much on (loopback's is a
// fraction of a millisecond).
constexpr absl::Duration kShownNetwork = absl::Milliseconds(1);

// A cause that is a deadline running out: the caller's, or one the hop set
// for itself (a reply margin before the caller's, a capped or defaulted
// one, a detached call's bound).
bool IsDeadlineCause(CauseKind c) {
  return c == CauseKind::kCallerDeadline || c == CauseKind::kDeadlinePolicy ||
         c == CauseKind::kReplyMargin || c == CauseKind::kDetachedBound;
}

// `setter`: the nearest hop above `h` (or `h` itself) whose deadline policy
// capped or defaulted the deadline `h` inherits; "" when it is the top
// caller's own.
void AppendHop(const LedgerHop& h, bool root, int depth, std::string_view setter,
               std::string& out) {
  const std::string name = Clean(h.host.empty() ? h.method : h.host);
  if (h.policy.deadline_change != LedgerPolicy::DeadlineChange::kKept) {
    setter = name;
  }
  absl::StrAppend(&out, name);
  if (!root && h.budget.has_value()) {
    absl::StrAppend(&out, " (", Ms(*h.budget), " left)");
  }
  if (h.policy.shed) {
    absl::StrAppend(&out, " shed");
  } else {
    if (h.queued > absl::ZeroDuration()) {
      absl::StrAppend(&out, " ", Spent(h.queued), " queued,");
    }
    absl::StrAppend(&out, " ", Spent(h.work), " work");
  }
  size_t calls = h.outbound.size() + h.omitted_outbound;
  const LedgerOutbound* next = nullptr;
  for (const LedgerOutbound& o : h.outbound) {
    if (o.code != 0) next = &o;
  }
  if (next != nullptr && calls > 1) {
    absl::StrAppend(&out, " (", calls, " calls)");
  }
  bool deeper = next != nullptr && next->sent && !next->ledger.empty() &&
                depth + 1 < kLedgerMaxDepth;
  bool here = h.code != 0 && (next == nullptr || !next->sent);
  if (here) {
    if (h.code == 4 && (h.cause == CauseKind::kNone ||
                        IsDeadlineCause(h.cause))) {
      absl::StrAppend(&out, ", deadline ran out here");
      if (!h.deadline_set_by.empty()) {
        absl::StrAppend(&out, " (set by ", Clean(h.deadline_set_by), ")");
      } else if (h.cause != CauseKind::kNone &&
                 h.cause != CauseKind::kCallerDeadline) {
        absl::StrAppend(&out, " (", Sv(CausePhrase(h.cause)), ")");
      } else if (!setter.empty() && !root) {
        // The caller's deadline, inherited from the hop above that set it.
        absl::StrAppend(&out, " (set by ", Sv(setter), ")");
      }
    } else if (h.cause != CauseKind::kNone) {
      absl::StrAppend(&out, ", ended here: ", Sv(CausePhrase(h.cause)));
    } else {
      absl::StrAppend(&out, ", ended here: ", CodeText(h.code));
    }
  }
  if (next == nullptr) return;
  absl::StrAppend(&out, " -> ");
  if (!next->sent) {
    absl::StrAppend(&out, Clean(next->method), " never called");
  } else if (deeper) {
    if (std::optional<absl::Duration> net = LedgerNetworkTime(*next);
        net.has_value() && *net >= kShownNetwork) {
      absl::StrAppend(&out, "network ", Spent(*net), " -> ");
    }
    AppendHop(next->ledger.front(), false, depth + 1, setter, out);
  } else if (next->code == 4 && next->ledger.empty() &&
             next->summarised_hops == 0) {
    // Sent, and the caller's deadline for it ran out with no answer: the
    // time went on the link (or at a callee that keeps no ledger), not in
    // this hop's work.
    absl::StrAppend(&out, "network ", Spent(next->took), " to ",
                    Clean(next->peer.empty() ? next->method : next->peer));
    if (!next->peer.empty()) absl::StrAppend(&out, " (", Clean(next->method), ")");
    absl::StrAppend(&out, ", DEADLINE_EXCEEDED: deadline ran out in transit, "
                          "no ledger came back");
  } else {
    absl::StrAppend(&out, Clean(next->method), " ", Spent(next->took), ", ",
                    CodeText(next->code));
    if (next->summarised_hops > 0) {
      absl::StrAppend(&out, " (", next->summarised_hops, " hops summarised)");
    } else {
      absl::StrAppend(&out, " (no ledger)");
    }
  }
}

}  // namespace

// ---- LedgerRecorder --------------------------------------------------------

LedgerRecorder::LedgerRecorder(std::string_view method, std::string_view host,
                               absl::Time arrival,
                               std::optional<absl::Duration> budget)
    : method_(method), host_(host), budget_(budget), arrival_(arrival) {}

bool LedgerRecorder::ShouldReturn(int code) {
  return code == 1 || code == 4 || code == 8 || code == 14;
}

void LedgerRecorder::SetQueued(absl::Duration queued) { queued_ = queued; }

void LedgerRecorder::SetPolicy(const LedgerPolicy& policy) { policy_ = policy; }

void LedgerRecorder::HandlerStarted(absl::Time now) { handler_start_ = now; }

void LedgerRecorder::HandlerEnded(absl::Time now) { handler_end_ = now; }

LedgerRecorder::OutboundId LedgerRecorder::OutboundStarted(
    std::string_view method, std::optional<absl::Duration> budget,
    absl::Time now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (in_flight_++ == 0) busy_since_ = now;
  if (records_.size() >= static_cast<size_t>(kLedgerRecordedOutbound)) {
    ++omitted_;
    return -1;
  }
  Record& r = records_.emplace_back();
  r.method.assign(method);
  r.budget = budget;
  r.start = now;
  return static_cast<OutboundId>(records_.size() - 1);
}

void LedgerRecorder::OutboundEnded(OutboundId id, absl::Time now, int code,
                                   bool sent, std::optional<LedgerHop> child,
                                   std::string_view peer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (in_flight_ > 0 && --in_flight_ == 0) {
    busy_ += std::max(now - busy_since_, absl::ZeroDuration());
  }
  if (id < 0 || static_cast<size_t>(id) >= records_.size()) return;
  Record& r = records_[id];
  if (r.ended) return;
  r.ended = true;
  r.took = std::max(now - r.start, absl::ZeroDuration());
  r.code = code;
  r.sent = sent;
  if (child.has_value()) {
    r.child = std::make_unique<LedgerHop>(*std::move(child));
  } else if (sent && code != 0) {
    r.peer.assign(peer.substr(0, kLedgerMaxString));
  }
}

void LedgerRecorder::Ended(int code, CauseKind cause,
                           std::string_view deadline_set_by,
                           std::optional<absl::Duration> reply_margin) {
  code_ = code;
  cause_ = cause;
  deadline_set_by_.assign(deadline_set_by);
  reply_margin_ = reply_margin;
}

Ledger LedgerRecorder::Snapshot() const {
  Ledger l;
  LedgerHop& h = l.root;
  h.method = std::string(method_);
  h.host = std::string(host_);
  h.budget = budget_;
  h.queued = queued_;
  h.policy = policy_;
  h.code = code_;
  h.cause = cause_;
  h.deadline_set_by = deadline_set_by_;
  h.reply_margin = reply_margin_;
  absl::Duration handler = handler_end_ > handler_start_ &&
                                   handler_start_ != absl::InfinitePast()
                               ? handler_end_ - handler_start_
                               : absl::ZeroDuration();
  std::lock_guard<std::mutex> lock(mu_);
  h.outbound_wait = std::min(busy_, handler);
  h.work = handler - h.outbound_wait;
  h.omitted_outbound = omitted_;
  h.outbound.reserve(records_.size());
  for (const Record& r : records_) {
    LedgerOutbound& o = h.outbound.emplace_back();
    o.method = r.method;
    o.budget = r.budget;
    o.took = r.took;
    o.code = r.ended ? r.code : 0;
    o.sent = r.sent;
    // The callee's summarised hops stay counted where they were lost.
    if (r.child != nullptr) o.ledger.push_back(*r.child);
    o.peer = r.peer;
  }
  return l;
}

absl::Duration LedgerRecorder::OwnShare(absl::Time now) const {
  if (handler_start_ == absl::InfinitePast()) return queued_;
  const absl::Time end =
      handler_end_ != absl::InfinitePast() ? handler_end_ : now;
  const absl::Duration handler =
      std::max(end - handler_start_, absl::ZeroDuration());
  absl::Duration busy;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy = busy_;
    if (in_flight_ > 0) busy += std::max(end - busy_since_, absl::ZeroDuration());
  }
  return queued_ + handler - std::min(busy, handler);
}

// ---- free functions --------------------------------------------------------

std::optional<absl::Duration> LedgerNetworkTime(const LedgerOutbound& o) {
  if (o.ledger.empty()) return std::nullopt;
  const LedgerHop& callee = o.ledger.front();
  return std::max(o.took - (callee.queued + callee.work + callee.outbound_wait),
                  absl::ZeroDuration());
}

std::string LedgerLine(const Ledger& ledger) {
  std::string out;
  const LedgerHop& root = ledger.root;
  if (root.budget.has_value()) {
    absl::StrAppend(&out, "deadline ", Ms(*root.budget), ": ");
  } else {
    absl::StrAppend(&out, "no deadline: ");
  }
  AppendHop(root, true, 0, "", out);
  if (ledger.summarised_hops > 0) {
    absl::StrAppend(&out, " [", ledger.summarised_hops, " hops summarised]");
  }
  return out;
}

std::string EncodeLedgerStatus(int code, std::string_view message,
                               const Ledger& ledger) {
  google::rpc::Status base;
  base.set_code(code);
  base.set_message(std::string(message.substr(0, kMessageCap)));
  std::optional<std::string> out = Compose(base, ledger);
  if (out.has_value()) return *std::move(out);
  base.clear_message();  // Unreachable with kMessageCap < the cap; bounded.
  return base.SerializeAsString();
}

std::optional<std::string> MergeLedgerDetails(std::string_view existing,
                                              int code,
                                              std::string_view message,
                                              const Ledger& ledger) {
  if (existing.empty()) return EncodeLedgerStatus(code, message, ledger);
  if (existing.size() > kLedgerDetailsCap) return std::nullopt;
  google::rpc::Status theirs;
  if (!Utf8Clean(existing, kStatusWire, 2) ||
      !theirs.ParseFromArray(existing.data(),
                             static_cast<int>(existing.size()))) {
    return std::nullopt;
  }
  // Theirs whole (fields this schema does not know included), but for
  // reqctx's own details.
  google::rpc::Status base = theirs;
  base.clear_details();
  for (const google::protobuf::Any& any : theirs.details()) {
    if (!IsOurs(any)) *base.add_details() = any;
  }
  return Compose(base, ledger);
}

absl::StatusOr<Ledger> DecodeLedgerDetails(std::string_view details) {
  if (details.empty()) return absl::NotFoundError("no status details");
  if (details.size() > kLedgerDecodeLimit) {
    return Bad("status details over the decode limit");
  }
  google::rpc::Status st;
  if (!Utf8Clean(details, kStatusWire, 2)) {
    return Bad("status details hold a string that is not UTF-8");
  }
  if (!st.ParseFromArray(details.data(), static_cast<int>(details.size()))) {
    return Bad("status details are not a google.rpc.Status");
  }
  for (const google::protobuf::Any& any : st.details()) {
    if (any.type_url() != kLedgerTypeUrl) continue;
    // Each hop is two message levels (Hop, Outbound) deep.
    if (!Utf8Clean(any.value(), kBudgetLedgerWire, 2 * kLedgerMaxDepth + 2)) {
      return Bad("a ledger string is not UTF-8");
    }
    google::protobuf::io::CodedInputStream in(
        reinterpret_cast<const uint8_t*>(any.value().data()),
        static_cast<int>(any.value().size()));
    // Each hop is two message levels (Hop, Outbound) deep.
    in.SetRecursionLimit(2 * kLedgerMaxDepth + 2);
    reqctx::v1::BudgetLedger l;
    if (!l.ParseFromCodedStream(&in) || !in.ConsumedEntireMessage()) {
      return Bad("not a reqctx.v1.BudgetLedger");
    }
    if (l.version() < 1) return Bad("no version");
    Ledger out;
    out.summarised_hops = l.summarised_hops();
    DecodeBudget budget;
    absl::Status s = FromProto(l.root(), 0, budget, out.root);
    if (!s.ok()) return s;
    return out;
  }
  return absl::NotFoundError("no budget ledger in the status details");
}

}  // namespace reqctx
