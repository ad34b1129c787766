// What the fuzz targets in tests/fuzz/ share: a property check that aborts
// (which libFuzzer reports as a crash and keeps the input of), and a reader
// that turns the fuzzer's bytes into values.
//
// Each target defines LLVMFuzzerTestOneInput(). tools/fuzz links it with
// libFuzzer (clang); Bazel links it with fuzz_replay_main.cc into a test that
// runs it over the target's corpus in tests/fuzz/corpus/ (see
// docs/testing.md).
//
// Thread safety: FuzzInput is not thread-safe; a target runs one input at a
// time.

#ifndef ONLYONE_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define ONLYONE_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace onlyone::fuzz {

// Prints "FILE:LINE: property failed: CONDITION: DETAIL" and aborts.
[[noreturn]] void PropertyFailed(const char* file, int line,
                                 const char* condition,
                                 const std::string& detail);

// Checks a property of the code under test; `detail` (a std::string
// expression) is evaluated only when it fails.
#define FUZZ_CHECK(condition, detail)                                 \
  do {                                                                \
    if (!(condition)) {                                               \
      ::onlyone::fuzz::PropertyFailed(__FILE__, __LINE__, #condition, \
                                      (detail));                      \
    }                                                                 \
  } while (false)

// Reads values from the front of the fuzzer's bytes; once they run out,
// every read returns zero or empty.
class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  // The next 8 bytes, little-endian (fewer at the end).
  uint64_t Integer();
  bool Bool() { return (Integer() & 1) != 0; }
  // A string of at most `max_size` bytes, its length from the next byte.
  std::string String(size_t max_size);
  // Everything not read yet.
  absl::string_view Rest() const { return rest_; }

 private:
  absl::string_view rest_;
};

}  // namespace onlyone::fuzz

#endif  // ONLYONE_TESTS_FUZZ_FUZZ_SUPPORT_H_
