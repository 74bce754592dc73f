// Timing bounds for tests that also run under ThreadSanitizer and
// AddressSanitizer (--config=tsan / --config=asan), where everything runs
// several times slower: one place that says which build this is.
//
//   constexpr int kScale = testing::PlainOrSanitized(1, 4);
//   constexpr absl::Duration kSlack = testing::PlainOrSanitized(
//       absl::Milliseconds(50), absl::Milliseconds(250));
//
// Thread-safety: constants only. Lifetime: none.
#ifndef REQCTX_TESTS_TEST_TIMING_H_
#define REQCTX_TESTS_TEST_TIMING_H_

namespace reqctx::testing {

// True when compiled with -fsanitize=thread or -fsanitize=address.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// `plain` in a plain build, `sanitized` under TSan or ASan.
template <typename T>
constexpr T PlainOrSanitized(T plain, T sanitized) {
  return kSanitized ? sanitized : plain;
}

}  // namespace reqctx::testing

#endif  // REQCTX_TESTS_TEST_TIMING_H_
