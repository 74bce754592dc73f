// Regression test for the libFuzzer target, built by gcc under Bazel: runs
// LLVMFuzzerTestOneInput (traceparent_fuzzer.cc: parser vs. a reference
// grammar, and the round-trip property) over every seed in corpus/, plus
// every one-byte change of a valid header, so `bazel test //...` covers them
// without clang. A failed check traps (the test dies with the input's name on
// stderr). The bounded fuzzing run itself is tools/fuzz_traceparent.sh.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "gtest/gtest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

void RunInput(const std::string& name, const std::string& input) {
  std::fprintf(stderr, "input: %s\n", name.c_str());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                         input.size());
}

std::filesystem::path CorpusDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return std::filesystem::path(srcdir ? srcdir : ".") /
         (workspace ? workspace : "reqctx") / "tests/fuzz/corpus";
}

TEST(TraceparentCorpus, EverySeedHoldsTheProperties) {
  int seeds = 0;
  for (const auto& entry : std::filesystem::directory_iterator(CorpusDir())) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::string input((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    RunInput(entry.path().filename().string(), input);
    ++seeds;
  }
  EXPECT_GE(seeds, 20);  // The corpus was found (not an empty directory).
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
