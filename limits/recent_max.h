// RecentMax<N>: the largest of the last N values added (a ring of N). The
// one shape of "a new value only once a run of N samples agrees": an
// algorithm that takes min(x, RecentMax) moves x down only when N samples
// in a row are under x, so one sample at the low tail of a spread of
// handling times does not move it (Gradient2's long <= short rule: N = 2;
// Vegas' no_load: N = 3).
//
// Thread-safety: none; its owner (a Limit: limit.h) serializes calls.
// Before N values are added the missing ones read as 0 (or Fill's value).
#ifndef REQCTX_LIMITS_RECENT_MAX_H_
#define REQCTX_LIMITS_RECENT_MAX_H_

#include <algorithm>
#include <array>

namespace reqctx::limits {

template <int N>
class RecentMax {
 public:
  static_assert(N >= 1);
  // Adds `v`, forgetting the value added N calls ago.
  void Add(double v) {
    ring_[next_] = v;
    next_ = (next_ + 1) % N;
  }
  // The largest of the last N values.
  double Max() const { return *std::max_element(ring_.begin(), ring_.end()); }
  // Every slot `v`: the next lower Max takes a whole run of N again.
  void Fill(double v) { ring_.fill(v); }

 private:
  std::array<double, N> ring_{};
  int next_ = 0;
};

}  // namespace reqctx::limits

#endif  // REQCTX_LIMITS_RECENT_MAX_H_
