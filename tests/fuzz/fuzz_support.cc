#include "tests/fuzz/fuzz_support.h"

#include <cstdio>
#include <cstdlib>

namespace onlyone::fuzz {

void PropertyFailed(const char* file, int line, const char* condition,
                    const std::string& detail) {
  fprintf(stderr, "%s:%d: property failed: %s: %s\n", file, line, condition,
          detail.c_str());
  abort();
}

uint64_t FuzzInput::Integer() {
  uint64_t value = 0;
  const size_t bytes = rest_.size() < 8 ? rest_.size() : 8;
  for (size_t i = 0; i < bytes; ++i) {
    value |= uint64_t{static_cast<unsigned char>(rest_[i])} << (8 * i);
  }
  rest_.remove_prefix(bytes);
  return value;
}

std::string FuzzInput::String(size_t max_size) {
  if (rest_.empty()) return "";
  size_t size = static_cast<unsigned char>(rest_[0]);
  rest_.remove_prefix(1);
  if (size > max_size) size = max_size;
  if (size > rest_.size()) size = rest_.size();
  std::string value(rest_.substr(0, size));
  rest_.remove_prefix(size);
  return value;
}

}  // namespace onlyone::fuzz
