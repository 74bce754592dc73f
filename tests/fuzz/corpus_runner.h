// Shared by the gcc-built regression tests of the libFuzzer targets: runs
// LLVMFuzzerTestOneInput (the one target linked into the test) over inputs,
// naming each on stderr first so a trap points at it.
//
// Thread-safety: call from the test's thread only.
#ifndef REQCTX_TESTS_FUZZ_CORPUS_RUNNER_H_
#define REQCTX_TESTS_FUZZ_CORPUS_RUNNER_H_

#include <string>

namespace reqctx::fuzz {

// Runs the target on `input`, printing `name` first.
void RunInput(const std::string& name, const std::string& input);
// Runs the target on every file in tests/fuzz/<dir> (from the test's
// runfiles); returns how many there were.
int RunCorpus(const std::string& dir);

}  // namespace reqctx::fuzz

#endif  // REQCTX_TESTS_FUZZ_CORPUS_RUNNER_H_
