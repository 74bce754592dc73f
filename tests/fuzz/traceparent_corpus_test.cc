// Regression test for the libFuzzer target, built by gcc under Bazel: runs
// LLVMFuzzerTestOneInput (traceparent_fuzzer.cc: parser vs. a reference
// grammar, and the round-trip property) over every seed in corpus/, plus
// every one-byte change of a valid header, so `bazel test //...` covers them
// without clang. A failed check traps (the test dies with the input's name on
// stderr). The bounded fuzzing run itself is tools/fuzz_traceparent.sh.
#include <string>

#include "gtest/gtest.h"
#include "tests/fuzz/corpus_runner.h"

namespace {

using reqctx::fuzz::RunInput;

TEST(TraceparentCorpus, EverySeedHoldsTheProperties) {
  // At least the seeds in the tree: the corpus was found, not an empty dir.
  EXPECT_GE(reqctx::fuzz::RunCorpus("corpus"), 20);
}

TEST(TraceparentCorpus, EveryOneByteChangeOfAValidHeader) {
  const std::string valid =
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::string replacements("01aefgA-_ \0\x7f\x80\xff", 15);
  for (size_t pos = 0; pos < valid.size(); ++pos) {
    for (char c : replacements) {
      std::string input = valid;
      input[pos] = c;
      RunInput("valid with byte " + std::to_string(pos) + " = " +
              std::to_string(static_cast<unsigned char>(c)),
          input);
    }
  }
}

}  // namespace
