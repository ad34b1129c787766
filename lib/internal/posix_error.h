// The one place where an errno value becomes an absl::Status.
//
// Every system call failure in onlyone is reported as
//   PosixError("/run/lock/x.lock: open", errno)
// which yields a status whose code follows the errno (see the table in
// posix_error.cc) and whose message reads
//   "/run/lock/x.lock: open: Permission denied".
// Callers save errno into a local before doing any cleanup (close(), unlock)
// that could overwrite it.
//
// flock(2) failures get FlockError() instead, which knows the errors that
// mean "this filesystem cannot take the lock" (NFS, some FUSE filesystems)
// and names the filesystem's type.

#ifndef ONLYONE_LIB_INTERNAL_POSIX_ERROR_H_
#define ONLYONE_LIB_INTERNAL_POSIX_ERROR_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace onlyone::internal {

// Returns a status for `error_number` with `context` (which names the path or
// lock and the failed operation) in front of strerror's text.
[[nodiscard]] absl::Status PosixError(absl::string_view context,
                                      int error_number);

// Returns the status code onlyone uses for `error_number`.
absl::StatusCode StatusCodeForErrno(int error_number);

// What is known about a flock(2) call that failed, for FlockError().
struct FlockFailure {
  int error_number = 0;
  // The type of the filesystem holding the file, as /proc/self/mountinfo
  // names it ("nfs4", "ext4"); "" if unknown.
  absl::string_view filesystem_type;
  // An exclusive lock was asked for on a descriptor opened read-only (the
  // user may not write the file).
  bool exclusive_on_read_only_descriptor = false;
};

// Returns the status for a failed flock(2) on `path`. EBADF, EIO and ENOLCK
// from flock(2) mean the filesystem could not take the lock (NFS emulates
// flock(2) with fcntl(2) byte-range locks, which need a lock manager and,
// for an exclusive lock, a writable descriptor): FailedPrecondition, with a
// message naming the path, the errno, the filesystem type and the likely
// reason. Any other errno is PosixError(path + ": flock", errno).
[[nodiscard]] absl::Status FlockError(absl::string_view path,
                                      const FlockFailure& failure);

// The type of the mounted filesystem whose device number is `device` (a
// file's st_dev), from /proc/self/mountinfo; "" if it cannot be told.
std::string FilesystemTypeOfDevice(dev_t device);

// The same, from `mountinfo` (the text of a /proc/PID/mountinfo file).
std::string FilesystemTypeInMountInfo(absl::string_view mountinfo,
                                      dev_t device);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_POSIX_ERROR_H_
