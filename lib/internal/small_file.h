// Reads small files (/proc entries, /etc/passwd) whole, with plain system
// calls: these reads sit on the paths that report a refusal or write an
// owner record, where iostreams' allocations and locale set-up would cost
// more than the read.
//
// Thread safety: thread-safe.

#ifndef ONLYONE_LIB_INTERNAL_SMALL_FILE_H_
#define ONLYONE_LIB_INTERNAL_SMALL_FILE_H_

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace onlyone::internal {

// Reads at most `limit` bytes of the file at `path` into `contents`
// (replacing what it held); false when it cannot be opened or read.
bool ReadSmallFile(absl::string_view path, size_t limit,
                   std::string* contents);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_SMALL_FILE_H_
