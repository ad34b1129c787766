#include "onlyone/internal/posix_error.h"

#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/small_file.h"

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

absl::Status FlockError(absl::string_view path, const FlockFailure& failure) {
  const int error_number = failure.error_number;
  if (error_number != EBADF && error_number != EIO && error_number != ENOLCK) {
    return PosixError(absl::StrCat(path, ": flock"), error_number);
  }
  const char* name = strerrorname_np(error_number);
  std::string message =
      absl::StrCat(path, ": flock: ", std::strerror(error_number), " (",
                   name != nullptr ? name : "?", ") on ",
                   failure.filesystem_type.empty()
                       ? std::string("a filesystem of unknown type")
                       : absl::StrCat("a filesystem of type ",
                                      failure.filesystem_type));
  if (error_number == EBADF && failure.exclusive_on_read_only_descriptor) {
    // The one case with a known remedy. Acquire() opens read-only only when
    // read-write was refused, so reopening read-write (what flock(1) does)
    // cannot help; the user can.
    absl::StrAppend(&message,
                    "; this filesystem emulates flock(2) with fcntl(2) locks, "
                    "and an exclusive one needs write access to the lock "
                    "file, which this user does not have (take a shared "
                    "lock, or use a lock file this user can write)");
  } else {
    absl::StrAppend(&message,
                    "; this filesystem may not support flock(2) locks (NFS "
                    "needs a running lock manager); use a lock file on a "
                    "local filesystem such as /run/lock or /tmp");
  }
  return absl::FailedPreconditionError(message);
}

std::string FilesystemTypeInMountInfo(absl::string_view mountinfo,
                                      dev_t device) {
  // Each line: ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] -
  // FSTYPE SOURCE SUPEROPTIONS (proc(5)).
  for (absl::string_view line : absl::StrSplit(mountinfo, '\n')) {
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (fields.size() < 3) continue;
    std::vector<absl::string_view> numbers = absl::StrSplit(fields[2], ':');
    unsigned int major_number, minor_number;
    if (numbers.size() != 2 || !absl::SimpleAtoi(numbers[0], &major_number) ||
        !absl::SimpleAtoi(numbers[1], &minor_number) ||
        makedev(major_number, minor_number) != device) {
      continue;
    }
    for (size_t i = 6; i + 1 < fields.size(); ++i) {
      if (fields[i] == "-") return std::string(fields[i + 1]);
    }
  }
  return "";
}

std::string FilesystemTypeOfDevice(dev_t device) {
  std::string mountinfo;
  if (!ReadSmallFile("/proc/self/mountinfo", 16 << 20, &mountinfo)) return "";
  return FilesystemTypeInMountInfo(mountinfo, device);
}

}  // namespace onlyone::internal
