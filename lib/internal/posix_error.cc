#include "lib/internal/posix_error.h"

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace onlyone::internal {

absl::StatusCode StatusCodeForErrno(int error_number) {
  switch (error_number) {
    case EACCES:
    case EPERM:
    case EROFS:
      return absl::StatusCode::kPermissionDenied;
    case ENOENT:
      return absl::StatusCode::kNotFound;
    case EINVAL:
    case ELOOP:
    case EISDIR:
    case ENOTDIR:
    case ENAMETOOLONG:
    case ENXIO:
    case ENODEV:
      return absl::StatusCode::kInvalidArgument;
    case EWOULDBLOCK:
    case EBUSY:
      return absl::StatusCode::kUnavailable;
    case EINTR:
      return absl::StatusCode::kAborted;
    case ETIMEDOUT:
      return absl::StatusCode::kDeadlineExceeded;
    case EDEADLK:
      return absl::StatusCode::kFailedPrecondition;
    case ENOSPC:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOLCK:
    case EDQUOT:
      return absl::StatusCode::kResourceExhausted;
    default:
      return absl::StatusCode::kInternal;
  }
}

absl::Status PosixError(absl::string_view context, int error_number) {
  return absl::Status(StatusCodeForErrno(error_number),
                      absl::StrCat(context, ": ", std::strerror(error_number)));
}

}  // namespace onlyone::internal
