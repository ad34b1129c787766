#include "onlyone/scoped_file_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/file_kind.h"
#include "onlyone/internal/holder_info.h"
#include "onlyone/internal/interruptible_wait.h"
#include "onlyone/internal/lock_table.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/proc_locks.h"
#include "onlyone/internal/retry.h"
#include "onlyone/internal/user_name.h"

namespace onlyone {
namespace {

using internal::HeldFile;
using internal::InterruptibleWait;
using internal::NonRegularFileKind;
using internal::PosixError;
using internal::RetryOnEintr;

struct OpenedFile {
  int fd;
  // fstat(2) right after the first flock(2) try; refreshed by
  // PathStillNamesFile() after a wait.
  struct stat status;
  // Whether the first, non-blocking flock(2) already took the lock.
  bool locked;
};

// The status for a failed flock(2) on `fd`, a descriptor of the file on
// `device`. Reads what only this error path needs: the filesystem type and
// the descriptor's access mode.
absl::Status FlockFailed(const std::string& path, int fd, dev_t device,
                         int operation, int error_number) {
  const int status_flags = fcntl(fd, F_GETFL);
  const std::string filesystem_type = internal::FilesystemTypeOfDevice(device);
  internal::FlockFailure failure;
  failure.error_number = error_number;
  failure.filesystem_type = filesystem_type;
  failure.exclusive_on_read_only_descriptor =
      operation == LOCK_EX && status_flags >= 0 &&
      (status_flags & O_ACCMODE) == O_RDONLY;
  return internal::FlockError(path, failure);
}

absl::Status NotARegularFile(const std::string& path, const char* kind) {
  return absl::InvalidArgumentError(absl::StrCat(
      path, " is ", kind,
      ", not a regular file; lock files are never followed or opened "
      "through other file types"));
}

// Explains a failed open(2): the kind of file in the way, the missing
// directory, or the errno.
absl::Status OpenError(const std::string& path, int error_number) {
  if (error_number == ENOENT) {
    return absl::NotFoundError(
        absl::StrCat(path, ": the directory for the lock file does not exist"));
  }
  struct stat in_the_way;
  if (lstat(path.c_str(), &in_the_way) == 0) {
    if (const char* kind = NonRegularFileKind(in_the_way.st_mode)) {
      return NotARegularFile(path, kind);
    }
    // Another user's file that we may not even read (a 0600 file planted
    // in a shared directory blocks the name): say whose, and what to do.
    if (error_number == EACCES && in_the_way.st_uid != geteuid()) {
      return absl::PermissionDeniedError(absl::StrCat(
          path, ": open: ", std::strerror(error_number),
          ": the file belongs to ", internal::DescribeUid(in_the_way.st_uid),
          " and has mode ",
          absl::StrFormat("%04o", in_the_way.st_mode & 07777),
          ", so this user can neither read nor lock it; have its owner or "
          "root remove it, or use another lock file"));
    }
  }
  return PosixError(absl::StrCat(path, ": open"), error_number);
}

// Opens `path` for locking and tries the lock once: never through a
// symlink, never blocking on a FIFO (O_NONBLOCK), never truncating. Creates
// the file with exactly `file_mode` if it is missing. The try comes before
// fstat(2) because the uncontended path is what callers pay most often and
// fstat's answers serve both outcomes; a non-regular file is refused (and
// the lock a try took on it dropped with the descriptor) before any wait.
// Call it under a HoldOffFork: the descriptor is not tracked yet.
absl::StatusOr<OpenedFile> OpenAndTryLock(const std::string& path,
                                          mode_t file_mode, int operation,
                                          bool writable) {
  constexpr int kFlags = O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
  int access = writable ? O_RDWR : O_RDONLY;
  for (;;) {
    int fd = RetryOnEintr([&] { return open(path.c_str(), access | kFlags); });
    // Another user's lock file is often not writable by us, nor is any file
    // on a read-only mount; flock(2) works on a read-only descriptor.
    if (fd < 0 && access == O_RDWR && (errno == EACCES || errno == EROFS)) {
      fd = RetryOnEintr([&] { return open(path.c_str(), O_RDONLY | kFlags); });
    }
    bool created = false;
    if (fd < 0 && errno == ENOENT) {
      fd = RetryOnEintr([&] {
        return open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | kFlags,
                    file_mode);
      });
      if (fd < 0 && errno == EEXIST) continue;  // lost a race to create it
      created = fd >= 0;
    }
    if (fd < 0) return OpenError(path, errno);
    absl::Cleanup close_fd = [fd] { close(fd); };
    const bool locked = flock(fd, operation | LOCK_NB) == 0;
    const int lock_error = locked ? 0 : errno;
    struct stat opened;
    if (fstat(fd, &opened) != 0) {
      return PosixError(absl::StrCat(path, ": fstat"), errno);
    }
    if (const char* kind = NonRegularFileKind(opened.st_mode)) {
      return NotARegularFile(path, kind);
    }
    // NFS emulates flock(2) with fcntl(2) locks, and an exclusive one needs
    // a writable descriptor: like flock(1), reopen read-write once when
    // read-only was our choice rather than the only access we have.
    if (!locked && lock_error == EBADF && access == O_RDONLY && !created &&
        !writable) {
      access = O_RDWR;
      writable = true;
      continue;
    }
    if (!locked && lock_error != EWOULDBLOCK) {
      return FlockFailed(path, fd, opened.st_dev, operation, lock_error);
    }
    // open(2) applied the umask; the documented mode is the exact one.
    if (created && fchmod(fd, file_mode) != 0) {
      return PosixError(absl::StrCat(path, ": fchmod"), errno);
    }
    std::move(close_fd).Cancel();
    return OpenedFile{fd, opened, locked};
  }
}

// Whether the path still names the locked file. A holder may remove or
// replace the file while we wait (or between our open and our lock), and a
// lock on a file nobody can open any more excludes nobody. Removing or
// replacing the file drops its link count to 0, which fstat(2) already told
// us; only a file with further hard links needs the path looked up again.
absl::StatusOr<bool> PathStillNamesFile(const std::string& path,
                                        OpenedFile& file, bool waited) {
  if (!waited && file.status.st_nlink == 1) return true;
  if (file.status.st_nlink == 0) return false;
  struct stat now;
  if (lstat(path.c_str(), &now) != 0) {
    const int error_number = errno;
    if (error_number == ENOENT) return false;
    return PosixError(absl::StrCat(path, ": lstat"), error_number);
  }
  if (now.st_dev != file.status.st_dev || now.st_ino != file.status.st_ino) {
    return false;
  }
  file.status = now;  // the same file, as it is now that we hold it
  return true;
}

// Who holds the file, read once for a refusal: its message and its payload
// (lib/lock_holder.h), which callers reuse instead of looking again.
HolderInfo FindHolders(const std::string& path, const struct stat& file) {
  HolderInfo holder;
  holder.resource = path;
  holder.device = file.st_dev;
  holder.inode = file.st_ino;
  std::optional<std::vector<internal::FlockHolder>> holders =
      internal::ReadFlockHolders(file.st_dev, file.st_ino);
  holder.holders_known = holders.has_value();
  for (const internal::FlockHolder& flock_holder : holders.value_or(
           std::vector<internal::FlockHolder>())) {
    LockHolderProcess& process = holder.holders.emplace_back();
    process.pid = flock_holder.pid;
    process.exclusive = flock_holder.exclusive;
    if (flock_holder.pid != 0) {
      process.name = internal::ProcessName(flock_holder.pid);
    }
  }
  return holder;
}

std::string DescribeHolder(const HolderInfo& holder) {
  if (holder.holders.size() == 1 && holder.holders[0].pid == getpid()) {
    return "this process (another ScopedFileLock or thread)";
  }
  std::vector<internal::FlockHolder> holders;
  std::vector<std::string> names;
  for (const LockHolderProcess& process : holder.holders) {
    holders.push_back({process.pid, process.exclusive});
    names.push_back(process.name);
  }
  std::string described = internal::DescribeHolders(holders, names);
  return described.empty() ? "another process" : described;
}

// A refusal because the file is held: `before` and `after` frame the
// holder's description, and the status carries the holder.
absl::Status HeldRefusal(absl::StatusCode code, const std::string& path,
                         const struct stat& file, absl::string_view before,
                         absl::string_view after) {
  const HolderInfo holder = FindHolders(path, file);
  absl::Status refusal(code,
                       absl::StrCat(before, DescribeHolder(holder), after));
  AttachHolder(refusal, holder);
  return refusal;
}

// Takes the flock(2) lock on `file`, waiting as the options say. `wait` is
// armed on the first blocking wait and kept across retries so that they
// share one deadline.
absl::Status LockOpenedFile(const OpenedFile& file, const std::string& path,
                            int operation, const LockOptions& options,
                            absl::Time deadline,
                            std::unique_ptr<InterruptibleWait>& wait) {
  if (file.locked) return absl::OkStatus();
  if (options.timeout == absl::ZeroDuration()) {
    return HeldRefusal(absl::StatusCode::kUnavailable, path, file.status,
                       absl::StrCat(path, " is held by "), "");
  }
  if (deadline == absl::InfiniteFuture() && !options.cancellation.has_value()) {
    if (RetryOnEintr([&] { return flock(file.fd, operation); }) != 0) {
      return FlockFailed(path, file.fd, file.status.st_dev, operation, errno);
    }
    return absl::OkStatus();
  }
  if (wait == nullptr) {
    absl::StatusOr<std::unique_ptr<InterruptibleWait>> started =
        InterruptibleWait::Start(deadline, options.cancellation.has_value()
                                               ? &options.cancellation->state()
                                               : nullptr);
    if (!started.ok()) {
      return absl::Status(started.status().code(),
                          absl::StrCat(path, ": ", started.status().message()));
    }
    wait = *std::move(started);
  }
  for (;;) {
    const InterruptibleWait::Outcome outcome = wait->Check();
    // Stop the interrupt timer before reading /proc for the message.
    if (outcome != InterruptibleWait::Outcome::kKeepWaiting) wait.reset();
    switch (outcome) {
      case InterruptibleWait::Outcome::kCancelled:
        if (internal::CancellationUnreported()) {
          return absl::CancelledError(
              absl::StrCat(path, ": cancelled while waiting"));
        }
        return HeldRefusal(absl::StatusCode::kCancelled, path, file.status,
                           absl::StrCat(path, ": cancelled while waiting; "
                                              "held by "),
                           "");
      case InterruptibleWait::Outcome::kDeadlineExceeded:
        return HeldRefusal(
            absl::StatusCode::kDeadlineExceeded, path, file.status,
            absl::StrCat(path, " is still held by "),
            absl::StrCat(" after waiting ",
                         absl::FormatDuration(options.timeout)));
      case InterruptibleWait::Outcome::kKeepWaiting:
        break;
    }
    if (flock(file.fd, operation) == 0) return absl::OkStatus();
    if (const int error_number = errno; error_number != EINTR) {
      return FlockFailed(path, file.fd, file.status.st_dev, operation,
                         error_number);
    }
  }
}

// The refusal of a nested acquisition by the thread that holds the lock,
// carrying the holder like any other refusal.
absl::Status WouldDeadlock(const std::string& path, const struct stat& file,
                           absl::string_view why) {
  absl::Status refusal =
      absl::FailedPreconditionError(absl::StrCat(path, why));
  AttachHolder(refusal, FindHolders(path, file));
  return refusal;
}

absl::Status ValidateRequest(absl::string_view path,
                             const LockOptions& options) {
  if (path.empty()) return absl::InvalidArgumentError("lock path is empty");
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("lock path contains a NUL byte: ", absl::CEscape(path)));
  }
  if (options.timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": negative timeout ",
                     absl::FormatDuration(options.timeout)));
  }
  if ((options.file_mode & ~static_cast<mode_t>(07777)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": file mode ", absl::StrFormat("%o", options.file_mode),
                     " has bits outside 07777"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ScopedFileLock> ScopedFileLock::Acquire(
    absl::string_view path_view, const LockOptions& options) {
  if (absl::Status valid = ValidateRequest(path_view, options); !valid.ok()) {
    return valid;
  }
  std::string path(path_view);  // moved into the lock on success
  const absl::Time deadline =
      options.timeout == absl::InfiniteDuration()
          ? absl::InfiniteFuture()
          : internal::MonotonicNow() + options.timeout;
  const int operation =
      options.mode == LockMode::kExclusive ? LOCK_EX : LOCK_SH;
  std::unique_ptr<InterruptibleWait> wait;
  for (;;) {
    absl::StatusOr<OpenedFile> file;
    HeldFile* tracked;
    {
      // From open(2) to the table entry a fork() child would inherit a
      // descriptor, maybe locked, that no fork handler closes.
      internal::HoldOffFork no_fork_until_tracked;
      file = OpenAndTryLock(path, options.file_mode, operation,
                            options.writable);
      if (!file.ok()) return file.status();

      const internal::Reacquisition again =
          internal::AddAcquisitionIfHeldByCallingThread(
              file->status.st_dev, file->status.st_ino, options.recursive,
              options.mode == LockMode::kExclusive);
      switch (again.outcome) {
        case internal::Reacquisition::Outcome::kNotHeld:
          break;
        case internal::Reacquisition::Outcome::kWouldDeadlock:
          close(file->fd);
          return WouldDeadlock(
              path, file->status,
              " is already held by this thread; waiting for it would "
              "deadlock (set LockOptions::recursive to count nested "
              "acquisitions)");
        case internal::Reacquisition::Outcome::kWouldUpgrade:
          close(file->fd);
          return WouldDeadlock(
              path, file->status,
              " is held shared by this thread; waiting to upgrade it to "
              "exclusive would deadlock");
        case internal::Reacquisition::Outcome::kCounted:
          close(file->fd);
          return ScopedFileLock(
              again.file, path,
              again.exclusive ? LockMode::kExclusive : LockMode::kShared,
              file->status);
      }

      // Tracked before the wait, so a child forked meanwhile closes its copy.
      tracked = internal::TrackOpenedFile(file->fd, path, file->status.st_dev,
                                          file->status.st_ino);
    }
    // On every early return the descriptor is closed, which also drops a
    // lock taken on a file the path no longer names.
    absl::Cleanup forget = [tracked] {
      internal::ReleaseAcquisition(tracked).IgnoreError();
    };

    if (absl::Status locked =
            LockOpenedFile(*file, path, operation, options, deadline, wait);
        !locked.ok()) {
      return locked;
    }

    absl::StatusOr<bool> still_named =
        PathStillNamesFile(path, *file, /*waited=*/!file->locked);
    if (!still_named.ok()) return still_named.status();
    if (!*still_named) continue;  // take the lock on the file named now

    if (options.inheritable && fcntl(file->fd, F_SETFD, 0) != 0) {
      return PosixError(absl::StrCat(path, ": clearing FD_CLOEXEC"), errno);
    }
    internal::MarkAcquired(tracked, options.mode == LockMode::kExclusive,
                           options.recursive, options.inheritable);
    std::move(forget).Cancel();
    return ScopedFileLock(tracked, std::move(path), options.mode,
                          file->status);
  }
}

absl::StatusOr<ScopedFileLock> ScopedFileLock::AdoptInherited(
    absl::string_view path_view) {
  const std::string path(path_view);
  const char* inherited = std::getenv(kInheritedLocksEnvVar);
  if (inherited == nullptr || *inherited == '\0') {
    return absl::NotFoundError(absl::StrCat(path, ": no lock was inherited (",
                                            kInheritedLocksEnvVar,
                                            " is not set)"));
  }
  struct stat named;
  if (lstat(path.c_str(), &named) != 0) {
    return PosixError(absl::StrCat(path, ": lstat"), errno);
  }
  // Entries are "FD:DEVICE:INODE:MODE", MODE being x (exclusive) or s.
  for (absl::string_view entry : absl::StrSplit(inherited, ',')) {
    std::vector<absl::string_view> fields = absl::StrSplit(entry, ':');
    int fd;
    uint64_t device, inode;
    if (fields.size() != 4 || !absl::SimpleAtoi(fields[0], &fd) ||
        !absl::SimpleAtoi(fields[1], &device) ||
        !absl::SimpleAtoi(fields[2], &inode) ||
        (fields[3] != "x" && fields[3] != "s")) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": malformed ", kInheritedLocksEnvVar, " entry \"", entry,
          "\""));
    }
    if (device != named.st_dev || inode != named.st_ino) continue;
    // Taking the descriptor over (FD_CLOEXEC on, into the table) is one
    // step for fork(): a child forked in between would keep the lock.
    internal::HoldOffFork no_fork_until_tracked;
    if (internal::TracksDescriptor(fd)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": inherited descriptor ", fd, " was already adopted"));
    }
    struct stat open_file;
    if (fstat(fd, &open_file) != 0 || open_file.st_dev != named.st_dev ||
        open_file.st_ino != named.st_ino) {
      return absl::FailedPreconditionError(absl::StrCat(
          path, ": inherited descriptor ", fd,
          " is closed or names another file"));
    }
    const bool exclusive = fields[3] == "x";
    // On the descriptor that holds the lock this is a no-op that succeeds;
    // it fails if the lock was released and someone else took it.
    if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0) {
      const int error_number = errno;
      if (error_number == EWOULDBLOCK) {
        return absl::FailedPreconditionError(absl::StrCat(
            path, ": inherited descriptor ", fd, " no longer holds the lock"));
      }
      return FlockFailed(path, fd, named.st_dev,
                         exclusive ? LOCK_EX : LOCK_SH, error_number);
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
      return PosixError(absl::StrCat(path, ": setting FD_CLOEXEC"), errno);
    }
    HeldFile* adopted =
        internal::TrackOpenedFile(fd, path, named.st_dev, named.st_ino);
    internal::MarkAcquired(adopted, exclusive, /*recursive=*/false,
                           /*inheritable=*/false);
    return ScopedFileLock(adopted, path,
                          exclusive ? LockMode::kExclusive : LockMode::kShared,
                          open_file);
  }
  return absl::NotFoundError(absl::StrCat(path, ": no inherited lock in ",
                                          kInheritedLocksEnvVar,
                                          " is for this file"));
}

ScopedFileLock::ScopedFileLock(HeldFile* file, std::string path, LockMode mode,
                               const struct stat& status_when_locked)
    : file_(file),
      path_(std::move(path)),
      mode_(mode),
      status_when_locked_(status_when_locked) {}

ScopedFileLock::ScopedFileLock(ScopedFileLock&& other) noexcept
    : file_(std::exchange(other.file_, nullptr)),
      path_(std::move(other.path_)),
      mode_(other.mode_),
      status_when_locked_(other.status_when_locked_) {}

ScopedFileLock& ScopedFileLock::operator=(ScopedFileLock&& other) noexcept {
  if (this != &other) {
    Release().IgnoreError();  // as in the destructor
    file_ = std::exchange(other.file_, nullptr);
    path_ = std::move(other.path_);
    mode_ = other.mode_;
    status_when_locked_ = other.status_when_locked_;
  }
  return *this;
}

ScopedFileLock::~ScopedFileLock() { Release().IgnoreError(); }

absl::Status ScopedFileLock::Release() {
  if (file_ == nullptr) return absl::OkStatus();
  return internal::ReleaseAcquisition(std::exchange(file_, nullptr));
}

bool ScopedFileLock::held() const {
  return file_ != nullptr && internal::OwnedHere(file_);
}

int ScopedFileLock::fd() const { return file_ == nullptr ? -1 : file_->fd; }

void ScopedFileLock::HandOffOnFork() {
  if (file_ != nullptr) internal::MarkHandOffOnFork(file_);
}

std::string ScopedFileLock::InheritedLocksEnvValue() const {
  if (file_ == nullptr || !file_->inheritable || file_->fd < 0) return "";
  std::string value =
      absl::StrCat(file_->fd, ":", file_->device, ":", file_->inode, ":",
                   file_->exclusive ? "x" : "s");
  if (const char* outer = std::getenv(kInheritedLocksEnvVar);
      outer != nullptr && *outer != '\0') {
    absl::StrAppend(&value, ",", outer);
  }
  return value;
}

}  // namespace onlyone
