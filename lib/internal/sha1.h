// SHA-1 of a byte string, in lower-case hex: how Redis names a Lua script in
// its script cache (EVALSHA), so a script's name can be computed locally
// instead of asked for with SCRIPT LOAD. Not for security.
//
// Example:
//   Sha1Hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d"
//
// Thread safety: a pure function.

#ifndef ONLYONE_LIB_INTERNAL_SHA1_H_
#define ONLYONE_LIB_INTERNAL_SHA1_H_

#include <string>

#include "absl/strings/string_view.h"

namespace onlyone::internal {

std::string Sha1Hex(absl::string_view data);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_SHA1_H_
