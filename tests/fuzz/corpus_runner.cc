#include "tests/fuzz/corpus_runner.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace reqctx::fuzz {

void RunInput(const std::string& name, const std::string& input) {
  std::fprintf(stderr, "input: %s\n", name.c_str());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()),
                         input.size());
}

int RunCorpus(const std::string& dir) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  const std::filesystem::path path = std::filesystem::path(srcdir ? srcdir : ".") /
                                     (workspace ? workspace : "reqctx") /
                                     "tests/fuzz" / dir;
  int seeds = 0;
  for (const auto& entry : std::filesystem::directory_iterator(path)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::string input((std::istreambuf_iterator<char>(in)),
                      std::istreambuf_iterator<char>());
    RunInput(entry.path().filename().string(), input);
    ++seeds;
  }
  return seeds;
}

}  // namespace reqctx::fuzz
