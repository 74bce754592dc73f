// Regression test for the baggage libFuzzer target, built by gcc under
// Bazel: runs LLVMFuzzerTestOneInput (baggage_fuzzer.cc: limits, round trip,
// and the parser against a reference state machine) over every seed in
// corpus_baggage/, plus every one-byte change of a header with properties,
// so `bazel test //...` covers them without clang. A failed check traps. The
// bounded fuzzing run itself is tools/fuzz_baggage.sh.
#include <string>

#include "gtest/gtest.h"
#include "tests/fuzz/corpus_runner.h"

namespace {

TEST(BaggageCorpus, EverySeedHoldsTheProperties) {
  // At least the seeds in the tree: the corpus was found, not an empty dir.
  EXPECT_GE(reqctx::fuzz::RunCorpus("corpus_baggage"), 14);
}

TEST(BaggageCorpus, EveryOneByteChangeOfAHeaderWithProperties) {
  const std::string valid = "k1=v%201;p;q=r , k2 = x,k3=y";
  const std::string replacements("=;,% \t\"\\\0\x7f\x80\xff" "aZ", 14);
  for (size_t pos = 0; pos < valid.size(); ++pos) {
    for (char c : replacements) {
      std::string input = valid;
      input[pos] = c;
      reqctx::fuzz::RunInput("byte " + std::to_string(pos) + " = " +
                                 std::to_string(static_cast<unsigned char>(c)),
                             input);
    }
  }
}

}  // namespace
