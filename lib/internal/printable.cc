#include "onlyone/internal/printable.h"

#include <cstddef>

#include "absl/strings/str_format.h"

namespace onlyone::internal {
namespace {

// The length of the well-formed UTF-8 sequence of two to four bytes at the
// start of `text` (Unicode's table 3-7), or 0 if there is none there.
size_t MultibyteSequenceLength(absl::string_view text) {
  const unsigned char lead = static_cast<unsigned char>(text[0]);
  size_t length;
  unsigned char second_low = 0x80, second_high = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead == 0xe0) {
    length = 3;
    second_low = 0xa0;  // shorter forms are overlong
  } else if (lead == 0xed) {
    length = 3;
    second_high = 0x9f;  // 0xa0.. would be a surrogate
  } else if (lead >= 0xe1 && lead <= 0xef) {
    length = 3;
  } else if (lead == 0xf0) {
    length = 4;
    second_low = 0x90;  // shorter forms are overlong
  } else if (lead >= 0xf1 && lead <= 0xf3) {
    length = 4;
  } else if (lead == 0xf4) {
    length = 4;
    second_high = 0x8f;  // beyond U+10FFFF
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  const unsigned char second = static_cast<unsigned char>(text[1]);
  if (second < second_low || second > second_high) return 0;
  for (size_t i = 2; i < length; ++i) {
    const unsigned char next = static_cast<unsigned char>(text[i]);
    if (next < 0x80 || next > 0xbf) return 0;
  }
  return length;
}

}  // namespace

std::string Printable(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x20 && byte < 0x7f) {
      out.push_back(text[i]);
      ++i;
      continue;
    }
    const size_t length =
        byte < 0x80 ? 0 : MultibyteSequenceLength(text.substr(i));
    if (length == 0) {
      absl::StrAppendFormat(&out, "\\x%02x", byte);
      ++i;
    } else if (byte == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) {
      absl::StrAppendFormat(&out, "\\u%04x",
                            static_cast<unsigned char>(text[i + 1]));
      i += length;
    } else {
      out.append(text.data() + i, length);
      i += length;
    }
  }
  return out;
}

}  // namespace onlyone::internal
