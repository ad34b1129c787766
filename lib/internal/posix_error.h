// The one place where an errno value becomes an absl::Status.
//
// Every system call failure in onlyone is reported as
//   PosixError("/run/lock/x.lock: open", errno)
// which yields a status whose code follows the errno (see the table in
// posix_error.cc) and whose message reads
//   "/run/lock/x.lock: open: Permission denied".
// Callers save errno into a local before doing any cleanup (close(), unlock)
// that could overwrite it.

#ifndef ONLYONE_LIB_INTERNAL_POSIX_ERROR_H_
#define ONLYONE_LIB_INTERNAL_POSIX_ERROR_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace onlyone::internal {

// Returns a status for `error_number` with `context` (which names the path or
// lock and the failed operation) in front of strerror's text.
[[nodiscard]] absl::Status PosixError(absl::string_view context,
                                      int error_number);

// Returns the status code onlyone uses for `error_number`.
absl::StatusCode StatusCodeForErrno(int error_number);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_POSIX_ERROR_H_
