// ScopedFileLock: an RAII kernel file lock that a process holds while it does
// something only one copy may do at a time.
//
// Example:
//   absl::StatusOr<onlyone::ScopedFileLock> lock =
//       onlyone::ScopedFileLock::Acquire("/run/lock/nightly.lock");
//   if (!lock.ok()) return lock.status();  // names the path and the holder
//   RunNightlyJob();
//   // The destructor releases the lock; Release() reports errors instead.
//
// Contract:
//  * Blocking: Acquire() with the default options waits until the lock is
//    free, without polling and without using CPU. LockOptions::timeout bounds
//    the wait (ZeroDuration() tries once), LockOptions::cancellation lets
//    another thread stop it. The holder's release wakes a waiter at once.
//  * Thread safety: Acquire() may be called from any number of threads. One
//    ScopedFileLock object is not synchronised: use it from one thread at a
//    time (moving it to another thread is fine).
//  * Semantics are those of flock(2), so onlyone, flock(1), py-filelock and
//    portalocker exclude each other on the same file. docs/design.md lists
//    them; in short:
//      - held by an open file description, so two ScopedFileLocks on one
//        file exclude each other even in one process and one thread (a
//        thread re-acquiring its own lock gets FailedPrecondition, or a
//        counted acquisition with LockOptions::recursive);
//      - a crash or kill of the holder releases the lock at once;
//      - not inherited by exec'd programs (O_CLOEXEC) unless
//        LockOptions::inheritable; a fork()ed child's copy never owns or
//        releases the parent's lock, unless HandOffOnFork() hands it over;
//      - the lock file is never truncated and never deleted, and a lock on a
//        path that was removed or replaced while waiting is retaken on the
//        file the path now names;
//      - reliable only on local filesystems (NFS emulates flock(2) with
//        byte-range locks; some FUSE filesystems ignore it).
//
// Status codes of Acquire() (docs/api.md has the same table):
//  * Unavailable: held elsewhere, on a try (timeout zero);
//  * DeadlineExceeded: the timeout passed while waiting;
//  * Cancelled: the token was cancelled before or during a wait;
//  * InvalidArgument: bad request or path (empty, NUL byte, negative timeout,
//    file_mode outside 07777, symlink, directory, FIFO, socket, device, a
//    path component not a directory, name too long);
//  * NotFound: the lock file's directory does not exist;
//  * PermissionDenied: the file cannot be opened or created;
//  * FailedPrecondition: the calling thread already holds the lock (not
//    recursive, or a nested exclusive request on a shared lock); or the
//    filesystem refused the lock (flock(2) failed with EBADF, EIO or
//    ENOLCK, as NFS does; the message names the filesystem type);
//  * ResourceExhausted: a timed or cancellable wait found no free real-time
//    signal, or the process or system is out of descriptors or memory;
//  * Internal: any other errno.
// Every message names the path. The refusals because the lock is held
// (Unavailable, DeadlineExceeded, Cancelled and the nested-acquisition
// FailedPrecondition) carry the holders that /proc/locks listed, as a
// HolderInfo (lib/lock_holder.h: HolderFromStatus()).

#ifndef ONLYONE_LIB_SCOPED_FILE_LOCK_H_
#define ONLYONE_LIB_SCOPED_FILE_LOCK_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/cancellation.h"
#include "onlyone/lock_options.h"

namespace onlyone {

namespace internal {
struct HeldFile;
}  // namespace internal

// The mode a newly created lock file gets. Readable by everyone so that
// other users can take the lock too (flock(2) works on a read-only
// descriptor); writable only by its creator.
inline constexpr mode_t kDefaultLockFileMode = 0644;

// The environment variable through which an exec'd program finds the lock
// descriptors it inherited; see ScopedFileLock::AdoptInherited().
inline constexpr char kInheritedLocksEnvVar[] = "ONLYONE_INHERITED_LOCKS";

// What only a kernel file lock has.
struct FileLockOptions {
  // When the calling thread already holds this lock: false fails with
  // FailedPrecondition ("would deadlock"); true counts the acquisition, and
  // the lock is released when every acquisition has been released.
  bool recursive = false;

  // Permission bits of a lock file this call creates, applied exactly (the
  // umask does not narrow them, so a lock shared across users stays
  // lockable by them). Existing files are never changed.
  mode_t file_mode = kDefaultLockFileMode;

  // Whether an existing lock file is opened for writing too. false opens it
  // read-only, as flock(1) does, so that a program can run while a lock on
  // its own file is held (exec(2) refuses a file open for writing); fd() is
  // then read-only. A file this call creates is opened read-write, and on
  // NFS an exclusive lock reopens read-write once (flock(2) is emulated
  // there with fcntl(2) locks, which need write access).
  bool writable = true;

  // When true, the descriptor is kept open across exec() and in fork()ed
  // children, so a program run under the lock holds it for its whole life
  // (even if this process dies first). The child finds it with
  // AdoptInherited() after InheritedLocksEnvValue() was put in its
  // environment. Children never release it; it is freed when the last
  // process holding the descriptor exits or this process releases it.
  bool inheritable = false;
};

// Everything ScopedFileLock::Acquire() takes: the generic request
// (lib/lock_options.h: mode, timeout, cancellation) and the file lock's
// own choices, set as members (`options.timeout = ...; options.file_mode =
// ...;`).
struct LockOptions : AcquireOptions, FileLockOptions {
  LockOptions() = default;
  LockOptions(const AcquireOptions& request, const FileLockOptions& file)
      : AcquireOptions(request), FileLockOptions(file) {}
};

class ScopedFileLock {
 public:
  // Locks the file at `path`, creating it (with options.file_mode) if it does
  // not exist. See the status codes above; every message names the path.
  [[nodiscard]] static absl::StatusOr<ScopedFileLock> Acquire(
      absl::string_view path, const LockOptions& options = {});

  // In a program exec'd with an inherited lock (see LockOptions::inheritable),
  // takes ownership of the descriptor that locks `path`. NotFound if none was
  // inherited; FailedPrecondition if the descriptor no longer holds the lock.
  [[nodiscard]] static absl::StatusOr<ScopedFileLock> AdoptInherited(
      absl::string_view path);

  ScopedFileLock(ScopedFileLock&& other) noexcept;
  ScopedFileLock& operator=(ScopedFileLock&& other) noexcept;
  ScopedFileLock(const ScopedFileLock&) = delete;
  ScopedFileLock& operator=(const ScopedFileLock&) = delete;

  // Releases the lock; errors are lost here, call Release() to see them.
  ~ScopedFileLock();

  // Releases this acquisition. Idempotent: later calls return OK. In a fork()
  // child that does not own the lock it only closes the child's descriptor.
  [[nodiscard]] absl::Status Release();

  // Whether this object holds the lock for this process: false after
  // Release(), after a move, and in a fork()ed child (except after a
  // hand-off).
  bool held() const;

  // The lock file's path as given to Acquire().
  const std::string& path() const { return path_; }

  // The mode the lock was taken in.
  LockMode mode() const { return mode_; }

  // The locked descriptor (-1 when not held), for reading or writing the
  // lock file's contents. Do not close, dup or flock(2) it: a duplicate
  // would keep the lock held after Release().
  int fd() const;

  // The lock file's status as the kernel gave it at acquisition: fstat(2) of
  // the descriptor right after the lock was taken, or after a wait lstat(2)
  // of the path (the check that it still names the locked file). A nested
  // recursive acquisition reports its own fstat, an adopted lock the fstat
  // made before its flock(2) check. Lets a holder that writes into the file
  // check its link count or size without a system call of its own. Not
  // updated afterwards.
  const struct stat& status_when_locked() const { return status_when_locked_; }

  // Makes the next fork() hand the lock to the child: the child owns it and
  // the parent's copy only closes its descriptor on release. It happens once:
  // later forks of the new owner hand nothing over, so for a double fork call
  // it again in the intermediate child. Use it right before daemonizing: the
  // parent can then exit while the daemon keeps the lock.
  void HandOffOnFork();

  // For a lock taken with options.inheritable: the value to set
  // kInheritedLocksEnvVar to in an exec'd child's environment (it keeps
  // entries this process inherited itself). "" if not inheritable.
  std::string InheritedLocksEnvValue() const;

 private:
  ScopedFileLock(internal::HeldFile* file, std::string path, LockMode mode,
                 const struct stat& status_when_locked);

  internal::HeldFile* file_;  // nullptr once released or moved from
  std::string path_;
  LockMode mode_;
  struct stat status_when_locked_;
};

}  // namespace onlyone

#endif  // ONLYONE_LIB_SCOPED_FILE_LOCK_H_
