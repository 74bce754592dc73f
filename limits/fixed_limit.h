// FixedLimit: a limit that never moves -- the operator's number (today's
// `max_concurrency`), behind the same interface as the adaptive ones.
//
// Thread-safety and lifetime: as every Limit (limit.h).
#ifndef REQCTX_LIMITS_FIXED_LIMIT_H_
#define REQCTX_LIMITS_FIXED_LIMIT_H_

#include "limits/limit.h"

namespace reqctx::limits {

class FixedLimit final : public Limit {
 public:
  // `limit` >= 1 (validated by LimitOptions; a smaller value is a bug).
  explicit FixedLimit(int limit) : limit_(limit) {}
  int Current() const override { return limit_; }
  void OnSample(const Sample&) override { ++samples_; }
  LimitInputs Inputs() const override {
    LimitInputs in;
    in.samples = samples_;
    return in;
  }
  std::string_view Name() const override { return "fixed"; }

 private:
  const int limit_;
  int64_t samples_ = 0;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_FIXED_LIMIT_H_
