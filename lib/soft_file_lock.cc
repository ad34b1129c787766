#include "onlyone/soft_file_lock.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "onlyone/internal/cancellation_state.h"
#include "onlyone/internal/file_kind.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/printable.h"
#include "onlyone/internal/retry.h"
#include "onlyone/internal/soft_lock_record.h"
#include "onlyone/internal/thread_signals.h"

namespace onlyone {
namespace {

using internal::PosixError;
using internal::RetryOnEintr;
using internal::SoftLockRecord;

// The first pause between two looks at a lock held from another host.
constexpr absl::Duration kFirstRemotePoll = absl::Milliseconds(10);
// Records are far smaller; more is someone's data.
constexpr size_t kMaxLockFileBytes = internal::kMaxRecordBodyBytes + 256;
// The command line shown in a refusal.
constexpr size_t kShownCommandBytes = 200;

struct PathParts {
  std::string path;
  std::string directory;
  std::string base;
};

absl::StatusOr<PathParts> SplitLockPath(absl::string_view path) {
  if (path.empty()) return absl::InvalidArgumentError("empty lock path");
  if (path.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(internal::Printable(path), ": a NUL byte in the path"));
  }
  PathParts parts;
  parts.path = std::string(path);
  const size_t slash = path.rfind('/');
  parts.directory = slash == absl::string_view::npos ? "."
                    : slash == 0                     ? "/"
                                 : std::string(path.substr(0, slash));
  parts.base = std::string(
      slash == absl::string_view::npos ? path : path.substr(slash + 1));
  if (parts.base.empty() || parts.base == "." || parts.base == "..") {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": names a directory, not a lock file"));
  }
  return parts;
}

// The record file an acquisition links into place.
std::string RecordFilePath(const PathParts& parts, absl::string_view nonce) {
  return absl::StrCat(parts.directory, "/.", parts.base, ".softlock-", nonce);
}

// Where a stale lock file is moved to be checked and removed.
std::string GravePath(const PathParts& parts) {
  return absl::StrCat(parts.directory, "/.", parts.base, ".broken-",
                      internal::NewNonce());
}

PathParts BreakLockParts(const PathParts& lock) {
  return PathParts{absl::StrCat(lock.path, ".break"), lock.directory,
                   absl::StrCat(lock.base, ".break")};
}

bool SameFile(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

absl::Time ModificationTime(const struct stat& file) {
  return absl::TimeFromTimespec(file.st_mtim);
}

absl::Status NotARegularFile(const std::string& path, const char* kind) {
  return absl::InvalidArgumentError(absl::StrCat(
      path, " is ", kind,
      ", not a regular file; soft lock files are never followed or opened "
      "through other file types, and this one was left untouched"));
}

// "now" on the filesystem's clock: the mtime the server gives `fd`'s file
// when we touch it (NFS sets UTIME_NOW times on the server).
absl::StatusOr<absl::Time> FilesystemNow(int fd, const std::string& path) {
  if (futimens(fd, nullptr) != 0) {
    return PosixError(absl::StrCat(path, ": touching a file to read the "
                                         "filesystem's clock"),
                      errno);
  }
  struct stat touched;
  if (fstat(fd, &touched) != 0) {
    return PosixError(absl::StrCat(path, ": fstat"), errno);
  }
  return ModificationTime(touched);
}

// ---------------------------------------------------------------------------
// Looking at the file at a lock path, and judging its holder.

struct Observation {
  bool free = false;
  struct stat file {};
  // Unset when the record cannot be read or is not believed.
  std::optional<SoftLockRecord> record;
};

// One look; nullopt when the file was replaced between lstat and open.
absl::StatusOr<std::optional<Observation>> ObserveOnce(
    const std::string& path) {
  Observation observation;
  struct stat named;
  if (lstat(path.c_str(), &named) != 0) {
    const int error_number = errno;
    if (error_number == ENOENT) {
      observation.free = true;
      return observation;
    }
    return PosixError(absl::StrCat(path, ": lstat"), error_number);
  }
  if (const char* kind = internal::NonRegularFileKind(named.st_mode)) {
    return NotARegularFile(path, kind);
  }
  observation.file = named;
  const int fd = open(path.c_str(),
                      O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    const int error_number = errno;
    if (error_number == ENOENT) {
      observation.free = true;
      return observation;
    }
    // Unreadable (another user's 0600 file): a lock file whose record
    // cannot be read.
    if (error_number == EACCES) return observation;
    return PosixError(absl::StrCat(path, ": open"), error_number);
  }
  std::string contents(kMaxLockFileBytes + 1, '\0');
  size_t got = 0;
  while (got < contents.size()) {
    const ssize_t n = RetryOnEintr(
        [&] { return read(fd, &contents[got], contents.size() - got); });
    if (n < 0) {
      const int error_number = errno;
      close(fd);
      return PosixError(absl::StrCat(path, ": read"), error_number);
    }
    if (n == 0) break;
    got += n;
  }
  struct stat opened;
  const bool same = fstat(fd, &opened) == 0 && SameFile(opened, named);
  close(fd);
  if (!same) return std::nullopt;
  contents.resize(got);
  if (!contents.empty() && !internal::LooksLikeSoftLockRecord(contents)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path,
        " holds data that is not a soft lock record; it is someone's file "
        "and was left untouched: use another lock path"));
  }
  std::optional<SoftLockRecord> record =
      internal::DecodeSoftLockRecord(contents);
  // A record is believed only from its own user: another user could plant
  // one naming any process.
  if (record.has_value() && record->owner.uid == named.st_uid) {
    observation.record = std::move(record);
  }
  return observation;
}

absl::StatusOr<Observation> Observe(const std::string& path) {
  // A file replaced between lstat and open is looked at again, a few times;
  // then it is a lock whose record cannot be read (someone keeps replacing
  // it: held, and judged by its age).
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<std::optional<Observation>> observation = ObserveOnce(path);
    if (!observation.ok()) return observation.status();
    if (observation->has_value()) return **std::move(observation);
  }
  Observation churning;
  if (lstat(path.c_str(), &churning.file) != 0) {
    churning.free = true;
  } else if (const char* kind =
                 internal::NonRegularFileKind(churning.file.st_mode)) {
    return NotARegularFile(path, kind);
  }
  return churning;
}

enum class Verdict {
  kAliveHere,    // on this host, the process lives: never broken
  kGoneHere,     // on this host (or this host before a reboot), gone
  kFresh,        // elsewhere or unreadable, heartbeat younger than stale_after
  kStale,        // elsewhere or unreadable, heartbeat older than stale_after
};

struct Judgement {
  Verdict verdict = Verdict::kFresh;
  bool on_this_host = false;
  absl::Duration heartbeat_age;  // on the filesystem's clock
};

bool Breakable(const Judgement& judgement) {
  return judgement.verdict == Verdict::kGoneHere ||
         judgement.verdict == Verdict::kStale;
}

Judgement Judge(const Observation& observation, absl::Time filesystem_now,
                absl::Duration stale_after) {
  Judgement judgement;
  judgement.heartbeat_age =
      filesystem_now - ModificationTime(observation.file);
  if (observation.record.has_value()) {
    const SoftLockRecord& record = *observation.record;
    const std::string& boot_id = internal::BootId();
    const bool same_boot = !boot_id.empty() && record.owner.boot_id == boot_id;
    if (same_boot && record.pid_namespace != 0 &&
        record.pid_namespace == internal::SelfPidNamespace()) {
      judgement.on_this_host = true;
      judgement.verdict = internal::RecordedProcessIsAlive(record.owner)
                              ? Verdict::kAliveHere
                              : Verdict::kGoneHere;
      return judgement;
    }
    const std::string& host = internal::CachedSelfIdentity().record.hostname;
    if (!same_boot && !host.empty() && record.owner.hostname == host) {
      // This host, before its last boot: every process of then is gone.
      judgement.on_this_host = true;
      judgement.verdict = Verdict::kGoneHere;
      return judgement;
    }
  }
  judgement.verdict = judgement.heartbeat_age > stale_after ? Verdict::kStale
                                                            : Verdict::kFresh;
  return judgement;
}

std::string DescribeHolder(const Observation& observation,
                           const Judgement& judgement) {
  if (!observation.record.has_value()) {
    return absl::StrCat(
        "a holder whose record cannot be read (file owned by uid ",
        observation.file.st_uid, ", last heartbeat ",
        absl::FormatDuration(absl::Trunc(judgement.heartbeat_age,
                                         absl::Milliseconds(1))),
        " ago on the filesystem's clock)");
  }
  const internal::OwnerRecord& owner = observation.record->owner;
  std::string command = absl::StrJoin(owner.command_line, " ");
  if (command.size() > kShownCommandBytes) {
    command.resize(kShownCommandBytes);
    command += "...";
  }
  std::string text = absl::StrCat(
      "pid ", owner.pid, " (", internal::Printable(command), ") on host ",
      internal::Printable(owner.hostname), " since ",
      owner.acquired_at == absl::InfinitePast()
          ? std::string("an unknown time")
          : internal::FormatRecordTime(owner.acquired_at));
  if (!judgement.on_this_host) {
    absl::StrAppend(&text, ", last heartbeat ",
                    absl::FormatDuration(absl::Trunc(judgement.heartbeat_age,
                                                     absl::Milliseconds(1))),
                    " ago");
  }
  return text;
}

// ---------------------------------------------------------------------------
// Creating by link(2): the recipe of open(2)'s manual, safe on NFS.

// A record file of ours, .NAME.softlock-NONCE, open on fd(); removed (its
// name only: a lock linked to it keeps the file) on destruction.
class RecordFile {
 public:
  static absl::StatusOr<std::unique_ptr<RecordFile>> Create(
      const PathParts& lock, const SoftLockRecord& record) {
    const std::string path = RecordFilePath(lock, record.nonce);
    const int fd =
        open(path.c_str(),
             O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC,
             0644);
    if (fd < 0) {
      const int error_number = errno;
      if (error_number == ENOENT) {
        return absl::NotFoundError(absl::StrCat(
            lock.path, ": the directory for the lock file does not exist"));
      }
      return PosixError(
          absl::StrCat(lock.path, ": creating the record file ", path),
          error_number);
    }
    std::unique_ptr<RecordFile> file(new RecordFile(path, fd));
    // Readable by everyone whatever the umask: other users judge the holder.
    if (fchmod(fd, 0644) != 0) {
      return PosixError(absl::StrCat(path, ": fchmod"), errno);
    }
    const std::string contents = internal::EncodeSoftLockRecord(record);
    size_t written = 0;
    while (written < contents.size()) {
      const ssize_t n = RetryOnEintr([&] {
        return write(fd, contents.data() + written, contents.size() - written);
      });
      if (n < 0) return PosixError(absl::StrCat(path, ": write"), errno);
      written += n;
    }
    return file;
  }

  ~RecordFile() {
    RemoveName();
    if (fd_ >= 0) close(fd_);
  }

  // Removes the name now (the file lives on while linked or open).
  void RemoveName() {
    if (!named_) return;
    named_ = false;
    unlink(path_.c_str());
  }

  // Gives the descriptor to the caller.
  int TakeFd() { return std::exchange(fd_, -1); }

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

 private:
  RecordFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

  const std::string path_;
  int fd_;
  bool named_ = true;
};

// Links `record` to `target` once; true when `target` is now that file. The
// link count decides, not link(2)'s result: over NFS a link whose reply was
// lost reports an error although it was made.
absl::StatusOr<bool> TryLink(const RecordFile& record,
                             const std::string& target) {
  const int result = link(record.path().c_str(), target.c_str());
  const int error_number = errno;
  struct stat ours;
  if (fstat(record.fd(), &ours) != 0) {
    return PosixError(absl::StrCat(record.path(), ": fstat"), errno);
  }
  if (result == 0 || ours.st_nlink >= 2) {
    struct stat named;
    if (lstat(target.c_str(), &named) == 0 && SameFile(named, ours)) {
      return true;
    }
    if (result == 0) {
      return absl::InternalError(absl::StrCat(
          target, ": link(2) succeeded but the path names another file"));
    }
  }
  switch (error_number) {
    case EEXIST:
      return false;
    case ENOENT:
      return absl::NotFoundError(absl::StrCat(
          target, ": the directory for the lock file does not exist"));
    case EPERM:
    case EOPNOTSUPP:
    case EMLINK:
      return absl::FailedPreconditionError(absl::StrCat(
          target, ": link: ", std::strerror(error_number),
          ": this filesystem does not make hard links, which a soft lock "
          "needs"));
    default:
      return PosixError(absl::StrCat(target, ": link"), error_number);
  }
}

// Removes the file at `path` if it is still `expected`: moves it to a name
// of our own (rename(2) is atomic, so only one remover gets it), checks
// what it moved, and puts back a file that is not `expected` (under the
// break lock, only a holder that came back after being judged stale can
// have put one there). True when `expected` was removed.
absl::StatusOr<bool> RemoveIfStill(const PathParts& parts,
                                   const struct stat& expected) {
  const std::string grave = GravePath(parts);
  if (rename(parts.path.c_str(), grave.c_str()) != 0) {
    const int error_number = errno;
    if (error_number == ENOENT) return false;
    return PosixError(absl::StrCat(parts.path, ": rename to ", grave),
                      error_number);
  }
  struct stat moved;
  if (lstat(grave.c_str(), &moved) != 0) {
    return PosixError(absl::StrCat(grave, ": lstat"), errno);
  }
  if (SameFile(moved, expected)) {
    if (unlink(grave.c_str()) != 0) {
      return PosixError(absl::StrCat(grave, ": unlink"), errno);
    }
    return true;
  }
  // Not the file we judged: give it its name back. If another lock took the
  // name meanwhile, the file stays under the grave name: its holder finds
  // the path no longer its own and learns that it lost the lock.
  if (link(grave.c_str(), parts.path.c_str()) == 0) unlink(grave.c_str());
  return false;
}

// ---------------------------------------------------------------------------
// Waiting: inotify on the directory for a holder on this host, polling for
// others; the cancellation token's eventfd ends either.

// Inotify instances kept for reuse by later waits: closing one waits for an
// SRCU grace period in the kernel, which took 15 ms on a loaded machine,
// on every hand-off. Lock-free slots, each an fd tagged with the pid that
// made it, so that a fork() child never reuses (and shares) its parent's.
class InotifyPool {
 public:
  // An instance with no watch, or -1 (make one).
  static int Take() {
    const uint64_t pid = static_cast<uint32_t>(getpid());
    for (std::atomic<uint64_t>& slot : slots_) {
      const uint64_t entry = slot.exchange(kEmpty);
      if (entry == kEmpty) continue;
      const int fd = static_cast<int>(entry & 0xffffffffu);
      if ((entry >> 32) == pid) return fd;
      close(fd);  // this process's copy of its parent's instance
    }
    return -1;
  }

  // Keeps `fd` (whose watch was removed) for a later Take(), or closes it.
  static void Give(int fd) {
    const uint64_t entry =
        (static_cast<uint64_t>(static_cast<uint32_t>(getpid())) << 32) |
        static_cast<uint32_t>(fd);
    for (std::atomic<uint64_t>& slot : slots_) {
      uint64_t empty = kEmpty;
      if (slot.compare_exchange_strong(empty, entry)) return;
    }
    close(fd);
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static inline std::atomic<uint64_t> slots_[8] = {
      kEmpty, kEmpty, kEmpty, kEmpty, kEmpty, kEmpty, kEmpty, kEmpty};
};

class Waiter {
 public:
  Waiter(const PathParts& lock, internal::CancellationState* cancellation)
      : lock_(lock), cancellation_(cancellation) {}
  ~Waiter() {
    if (inotify_fd_ < 0) return;
    inotify_rm_watch(inotify_fd_, watch_);
    InotifyPool::Give(inotify_fd_);
  }

  bool started() const { return started_; }

  // Starts watching the directory. A directory inotify cannot watch leaves
  // every wait to polling. Cancelled if the token already is.
  absl::Status Start() {
    started_ = true;
    if (cancellation_ != nullptr) {
      absl::StatusOr<std::unique_ptr<internal::CancellationEventFd>> waker =
          internal::CancellationEventFd::Create(*cancellation_);
      if (!waker.ok()) return waker.status();
      waker_ = *std::move(waker);
    }
    inotify_fd_ = InotifyPool::Take();
    if (inotify_fd_ < 0) {
      inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
      if (inotify_fd_ < 0) return absl::OkStatus();
    }
    watch_ = inotify_add_watch(inotify_fd_, lock_.directory.c_str(),
                               IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR);
    if (watch_ < 0) {
      InotifyPool::Give(inotify_fd_);
      inotify_fd_ = -1;
    }
    return absl::OkStatus();
  }

  bool watching() const { return inotify_fd_ >= 0; }

  enum class Result { kChanged, kTimedOut, kCancelled };

  // Waits until the lock or its break lock is removed or renamed (when
  // watching), `pidfd` (if >= 0) is readable, `wake_at` passes or the token
  // is cancelled.
  absl::StatusOr<Result> Wait(absl::Time wake_at, int pidfd) {
    const std::string break_name = absl::StrCat(lock_.base, ".break");
    for (;;) {
      struct pollfd fds[3];
      int count = 0;
      const int cancel_index = waker_ ? count : -1;
      if (waker_) fds[count++] = {waker_->fd(), POLLIN, 0};
      const int inotify_index = inotify_fd_ >= 0 ? count : -1;
      if (inotify_fd_ >= 0) fds[count++] = {inotify_fd_, POLLIN, 0};
      const int pidfd_index = pidfd >= 0 ? count : -1;
      if (pidfd >= 0) fds[count++] = {pidfd, POLLIN, 0};
      int timeout_ms = -1;
      if (wake_at != absl::InfiniteFuture()) {
        const absl::Duration left = wake_at - absl::Now();
        if (left <= absl::ZeroDuration()) return Result::kTimedOut;
        timeout_ms = static_cast<int>(std::min<int64_t>(
            absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
            INT32_MAX));
      }
      const int ready = poll(fds, count, timeout_ms);
      if (ready < 0) {
        if (errno == EINTR) continue;
        return PosixError(absl::StrCat(lock_.path, ": poll"), errno);
      }
      if (ready == 0) continue;  // the deadline check above decides
      if (cancel_index >= 0 && fds[cancel_index].revents != 0) {
        return Result::kCancelled;
      }
      if (pidfd_index >= 0 && fds[pidfd_index].revents != 0) {
        return Result::kChanged;
      }
      if (inotify_index >= 0 && fds[inotify_index].revents != 0 &&
          DrainEvents(break_name)) {
        return Result::kChanged;
      }
    }
  }

 private:
  // Reads the queued events; true if one names the lock or its break lock
  // (other waiters' record files come and go in the same directory).
  bool DrainEvents(const std::string& break_name) {
    alignas(struct inotify_event) char buffer[4096];
    bool relevant = false;
    for (;;) {
      const ssize_t got = read(inotify_fd_, buffer, sizeof buffer);
      if (got <= 0) break;
      for (ssize_t offset = 0; offset < got;) {
        const auto* event =
            reinterpret_cast<const struct inotify_event*>(buffer + offset);
        const absl::string_view name =
            event->len > 0 ? absl::string_view(event->name) : "";
        // Events of an earlier user's watch of a reused instance are not
        // ours.
        if ((event->wd == watch_ &&
             (name == lock_.base || name == break_name)) ||
            (event->mask & IN_Q_OVERFLOW) != 0) {
          relevant = true;
        }
        offset += sizeof(struct inotify_event) + event->len;
      }
    }
    return relevant;
  }

  const PathParts& lock_;
  internal::CancellationState* const cancellation_;
  bool started_ = false;
  int inotify_fd_ = -1;
  int watch_ = -1;
  std::unique_ptr<internal::CancellationEventFd> waker_;
};

// Owns a pidfd.
class Pidfd {
 public:
  Pidfd() = default;
  ~Pidfd() { Reset(); }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }
  // Watches the holder of `record` when it runs on this host; no pidfd (and
  // so polling only of inotify) when the kernel has none.
  void Watch(const SoftLockRecord& record) {
    Reset();
    absl::StatusOr<int> fd = internal::OpenPidfd(record.owner.pid);
    if (fd.ok()) fd_ = *fd;
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// How long to sleep before looking again at a lock of another host.
absl::Time RemoteWakeTime(const Judgement& judgement,
                          absl::Duration stale_after,
                          absl::Duration& backoff,
                          absl::Duration max_interval) {
  absl::Duration pause = backoff;
  backoff = std::min(backoff * 2, max_interval);
  // Look again as soon as the holder would turn stale.
  const absl::Duration until_stale =
      stale_after - judgement.heartbeat_age + absl::Milliseconds(1);
  if (until_stale > absl::ZeroDuration()) pause = std::min(pause, until_stale);
  return absl::Now() + pause;
}

// Waits once for the lock described by `judgement` to change.
absl::StatusOr<Waiter::Result> WaitForChange(Waiter& waiter,
                                             const Observation& observation,
                                             const Judgement& judgement,
                                             absl::Time deadline,
                                             absl::Duration stale_after,
                                             absl::Duration& backoff,
                                             absl::Duration max_interval) {
  Pidfd pidfd;
  absl::Time wake_at = deadline;
  if (judgement.verdict == Verdict::kAliveHere && waiter.watching()) {
    pidfd.Watch(*observation.record);
    // The pid may have been reused between the judgement and the pidfd.
    if (!internal::RecordedProcessIsAlive(observation.record->owner)) {
      return Waiter::Result::kChanged;
    }
  } else {
    wake_at = std::min(
        deadline, RemoteWakeTime(judgement, stale_after, backoff, max_interval));
  }
  return waiter.Wait(wake_at, pidfd.fd());
}

// ---------------------------------------------------------------------------
// The break lock, PATH.break: held for the few system calls of a break or a
// release, so that those never interleave.

class BreakLock {
 public:
  BreakLock(const BreakLock&) = delete;
  BreakLock& operator=(const BreakLock&) = delete;
  ~BreakLock() {
    // Ours unless broken as stale, which needs stale_after of a dead holder.
    struct stat named;
    if (lstat(parts_.path.c_str(), &named) == 0 && SameFile(named, file_)) {
      unlink(parts_.path.c_str());
    }
    close(fd_);
  }

  // Takes the break lock of `lock` once, breaking a stale one; nullptr when
  // a live holder has it (then `busy` and `busy_judgement` describe it).
  // `clock_fd` is a file of ours in the directory, to read the
  // filesystem's clock.
  static absl::StatusOr<std::unique_ptr<BreakLock>> TryTake(
      const PathParts& lock, int clock_fd, absl::Duration stale_after,
      Observation& busy, Judgement& busy_judgement) {
    const PathParts parts = BreakLockParts(lock);
    absl::StatusOr<std::unique_ptr<RecordFile>> record = RecordFile::Create(
        parts, internal::SelfSoftLockRecord(internal::NewNonce(), absl::Now()));
    if (!record.ok()) return record.status();
    for (;;) {
      absl::StatusOr<bool> linked = TryLink(**record, parts.path);
      if (!linked.ok()) return linked.status();
      if (*linked) {
        struct stat file;
        if (fstat((*record)->fd(), &file) != 0) {
          return PosixError(absl::StrCat(parts.path, ": fstat"), errno);
        }
        return std::unique_ptr<BreakLock>(
            new BreakLock(parts, (*record)->TakeFd(), file));
      }
      absl::StatusOr<Observation> observation = Observe(parts.path);
      if (!observation.ok()) return observation.status();
      if (observation->free) continue;
      absl::StatusOr<absl::Time> now = FilesystemNow(clock_fd, lock.path);
      if (!now.ok()) return now.status();
      const Judgement judgement = Judge(*observation, *now, stale_after);
      if (!Breakable(judgement)) {
        busy = *std::move(observation);
        busy_judgement = judgement;
        return nullptr;
      }
      // A break lock left by a dead breaker. Nothing serialises its
      // breakers; RemoveIfStill() puts back one it took by mistake.
      absl::StatusOr<bool> removed = RemoveIfStill(parts, observation->file);
      if (!removed.ok()) return removed.status();
    }
  }

 private:
  BreakLock(PathParts parts, int fd, const struct stat& file)
      : parts_(std::move(parts)), fd_(fd), file_(file) {}

  const PathParts parts_;
  const int fd_;
  const struct stat file_;
};

// Takes the break lock, waiting as long as it takes (a release must not
// give up); `clock_fd` as for BreakLock::TryTake.
absl::StatusOr<std::unique_ptr<BreakLock>> TakeBreakLock(
    const PathParts& lock, int clock_fd, const SoftLockOptions& options) {
  Waiter waiter(lock, nullptr);
  absl::Duration backoff = kFirstRemotePoll;
  for (;;) {
    Observation busy;
    Judgement judgement;
    absl::StatusOr<std::unique_ptr<BreakLock>> taken =
        BreakLock::TryTake(lock, clock_fd, options.stale_after, busy, judgement);
    if (!taken.ok() || *taken != nullptr) return taken;
    if (!waiter.started()) {
      absl::Status started = waiter.Start();
      if (!started.ok()) return started;
      continue;
    }
    absl::StatusOr<Waiter::Result> waited =
        WaitForChange(waiter, busy, judgement, absl::InfiniteFuture(),
                      options.stale_after, backoff,
                      options.remote_poll_interval);
    if (!waited.ok()) return waited.status();
  }
}

// Breaks the lock seen as `observation` if, under the break lock, it is
// still that file and still breakable. True when the caller should look
// again at once; false when the break lock was busy, and then
// `busy`/`busy_judgement` say who has it.
absl::StatusOr<bool> TryBreak(const PathParts& lock, int clock_fd,
                              const Observation& observation,
                              const SoftLockOptions& options,
                              Observation& busy, Judgement& busy_judgement) {
  absl::StatusOr<std::unique_ptr<BreakLock>> guard = BreakLock::TryTake(
      lock, clock_fd, options.stale_after, busy, busy_judgement);
  if (!guard.ok()) return guard.status();
  if (*guard == nullptr) return false;
  // Look again: the holder may have released, or another breaker been
  // first and a new holder come, or a heartbeat refreshed it.
  absl::StatusOr<Observation> again = Observe(lock.path);
  if (!again.ok()) return again.status();
  if (again->free || !SameFile(again->file, observation.file)) return true;
  absl::StatusOr<absl::Time> now = FilesystemNow(clock_fd, lock.path);
  if (!now.ok()) return now.status();
  if (!Breakable(Judge(*again, *now, options.stale_after))) return true;
  absl::StatusOr<bool> removed = RemoveIfStill(lock, again->file);
  if (!removed.ok()) return removed.status();
  return true;
}

absl::Status ValidateOptions(absl::string_view path,
                             const SoftLockOptions& options) {
  if (options.timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": negative timeout"));
  }
  if (options.stale_after <= absl::ZeroDuration() ||
      options.stale_after == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": stale_after must be positive and finite"));
  }
  if (options.remote_poll_interval <= absl::ZeroDuration() ||
      options.remote_poll_interval == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": remote_poll_interval must be positive and finite"));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------
// The held lock and its heartbeat.

struct SoftFileLock::State {
  State(PathParts parts_in, int fd_in, const struct stat& file_in,
        const SoftLockOptions& options_in)
      : parts(std::move(parts_in)),
        fd(fd_in),
        file(file_in),
        options(options_in),
        owner_pid(getpid()) {}

  // Whether the path still names our file. An error other than "no such
  // file" (EIO, ESTALE from a file server) says nothing, so it counts as
  // ours until a later look tells.
  bool StillOurs() const {
    struct stat named;
    if (lstat(parts.path.c_str(), &named) != 0) {
      return errno != ENOENT && errno != ENOTDIR;
    }
    return SameFile(named, file);
  }

  // After the heartbeat thread is joined (or, in a fork child, never).
  ~State() { close(fd); }

  void MarkLost() {
    if (held.exchange(false)) lost.Cancel();
  }

  void Heartbeat() {
    const absl::Duration interval = options.stale_after / 3;
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      if (wake.wait_for(lock, absl::ToChronoNanoseconds(interval),
                        [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
                          return stopping;
                        })) {
        return;
      }
      lock.unlock();
      // Touches the file whatever names it, then checks the name: a broken
      // lock is learnt here at the latest.
      futimens(fd, nullptr);
      const bool ours = StillOurs();
      lock.lock();
      // A release in the meantime removed the file: not a loss.
      if (stopping) return;
      if (!ours) {
        MarkLost();
        return;
      }
    }
  }

  // Tells the heartbeat thread to end, without waiting for it.
  void StopHeartbeat() {
    {
      std::lock_guard<std::mutex> lock(mu);
      stopping = true;
    }
    wake.notify_all();
  }

  const PathParts parts;
  const int fd;
  const struct stat file;
  const SoftLockOptions options;
  const pid_t owner_pid;
  std::atomic<bool> held{true};
  std::atomic<bool> released{false};
  CancellationToken lost;
  std::mutex mu;
  std::condition_variable wake;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  // Joined by Release() once the lock file is gone, so that a waiter is not
  // kept waiting for it to be scheduled, and a process that forks after a
  // release has no thread of ours left (ThreadSanitizer refuses threads in
  // a child forked from a multi-threaded process).
  std::thread heartbeat;
};

absl::StatusOr<SoftFileLock> SoftFileLock::Acquire(
    absl::string_view path, const SoftLockOptions& options) {
  absl::StatusOr<PathParts> parts = SplitLockPath(path);
  if (!parts.ok()) return parts.status();
  if (absl::Status valid = ValidateOptions(path, options); !valid.ok()) {
    return valid;
  }
  const absl::Time deadline = options.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options.timeout;
  // Refuse what is in the way before making any file.
  struct stat in_the_way;
  if (lstat(parts->path.c_str(), &in_the_way) == 0) {
    if (const char* kind = internal::NonRegularFileKind(in_the_way.st_mode)) {
      return NotARegularFile(parts->path, kind);
    }
  }
  const std::string nonce = internal::NewNonce();
  internal::SoftLockRecord own = internal::SelfSoftLockRecord(nonce, absl::Now());
  if (!options.recorded_command_line.empty()) {
    own.owner.command_line = options.recorded_command_line;
  }
  absl::StatusOr<std::unique_ptr<RecordFile>> record =
      RecordFile::Create(*parts, own);
  if (!record.ok()) return record.status();
  const int clock_fd = (*record)->fd();

  Waiter waiter(*parts, options.cancellation.has_value()
                            ? &options.cancellation->state()
                            : nullptr);
  absl::Duration backoff = kFirstRemotePoll;
  for (;;) {
    absl::StatusOr<bool> linked = TryLink(**record, parts->path);
    if (!linked.ok()) return linked.status();
    if (*linked) break;
    absl::StatusOr<Observation> observation = Observe(parts->path);
    if (!observation.ok()) return observation.status();
    if (observation->free) continue;
    absl::StatusOr<absl::Time> now = FilesystemNow(clock_fd, parts->path);
    if (!now.ok()) return now.status();
    Judgement judgement = Judge(*observation, *now, options.stale_after);
    if (Breakable(judgement)) {
      Observation busy;
      Judgement busy_judgement;
      absl::StatusOr<bool> looked_again = TryBreak(
          *parts, clock_fd, *observation, options, busy, busy_judgement);
      if (!looked_again.ok()) return looked_again.status();
      if (*looked_again) continue;
      // Another process is breaking or releasing it: wait on that one.
      *observation = std::move(busy);
      judgement = busy_judgement;
    }
    if (options.timeout == absl::ZeroDuration()) {
      return absl::UnavailableError(absl::StrCat(
          parts->path, " is held by ", DescribeHolder(*observation, judgement)));
    }
    if (!waiter.started()) {
      // Watch first, then look once more: a release between the last look
      // and the watch is not missed.
      absl::Status started = waiter.Start();
      if (absl::IsCancelled(started)) {
        return absl::CancelledError(absl::StrCat(
            parts->path, ": cancelled before waiting; held by ",
            DescribeHolder(*observation, judgement)));
      }
      if (!started.ok()) return started;
      continue;
    }
    absl::StatusOr<Waiter::Result> waited =
        WaitForChange(waiter, *observation, judgement, deadline,
                      options.stale_after, backoff,
                      options.remote_poll_interval);
    if (!waited.ok()) return waited.status();
    if (*waited == Waiter::Result::kCancelled) {
      return absl::CancelledError(
          absl::StrCat(parts->path, ": cancelled while waiting; held by ",
                       DescribeHolder(*observation, judgement)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(parts->path, " is still held by ",
                       DescribeHolder(*observation, judgement), " after ",
                       absl::FormatDuration(options.timeout)));
    }
  }
  struct stat file;
  if (fstat(clock_fd, &file) != 0) {
    return PosixError(absl::StrCat(parts->path, ": fstat"), errno);
  }
  // The lock path keeps the file; the record file's name goes.
  (*record)->RemoveName();
  auto state = std::make_unique<State>(*std::move(parts), (*record)->TakeFd(),
                                       file, options);
  State* const beating = state.get();
  {
    // A SIGTERM or SIGCHLD to the process is for the application (`onlyone
    // run` reads them from a signalfd), never for this thread.
    internal::NewThreadsBlockSignals blocked;
    state->heartbeat = std::thread([beating] { beating->Heartbeat(); });
  }
  return SoftFileLock(std::move(state));
}

absl::StatusOr<std::optional<SoftLockHolder>> SoftFileLock::Holder(
    absl::string_view path, const SoftLockOptions& options) {
  absl::StatusOr<PathParts> parts = SplitLockPath(path);
  if (!parts.ok()) return parts.status();
  absl::StatusOr<Observation> observation = Observe(parts->path);
  if (!observation.ok()) return observation.status();
  if (observation->free) return std::nullopt;
  // The filesystem's clock from a probe file, else the local clock.
  absl::Time now = absl::Now();
  absl::StatusOr<std::unique_ptr<RecordFile>> probe = RecordFile::Create(
      *parts, internal::SelfSoftLockRecord(internal::NewNonce(), now));
  if (probe.ok()) {
    absl::StatusOr<absl::Time> filesystem_now =
        FilesystemNow((*probe)->fd(), parts->path);
    if (filesystem_now.ok()) now = *filesystem_now;
  }
  const Judgement judgement =
      Judge(*observation, now, options.stale_after);
  SoftLockHolder holder;
  holder.heartbeat_age = judgement.heartbeat_age;
  holder.on_this_host = judgement.on_this_host;
  holder.alive = judgement.verdict == Verdict::kAliveHere;
  holder.stale = Breakable(judgement);
  if (observation->record.has_value()) {
    const SoftLockRecord& record = *observation->record;
    holder.record_readable = true;
    holder.host = record.owner.hostname;
    holder.boot_id = record.owner.boot_id;
    holder.pid = record.owner.pid;
    holder.uid = record.owner.uid;
    holder.process_started = record.owner.process_start_time;
    holder.since = record.owner.acquired_at;
    holder.command_line = record.owner.command_line;
    holder.nonce = record.nonce;
  }
  return holder;
}

SoftFileLock::SoftFileLock(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

SoftFileLock::SoftFileLock(SoftFileLock&& other) noexcept
    : state_(std::move(other.state_)) {}

SoftFileLock& SoftFileLock::operator=(SoftFileLock&& other) noexcept {
  if (this != &other) {
    Reset();
    state_ = std::move(other.state_);
  }
  return *this;
}

SoftFileLock::~SoftFileLock() { Reset(); }

void SoftFileLock::Reset() {
  if (state_ == nullptr) return;
  if (getpid() != state_->owner_pid) {
    // A fork() child: the heartbeat thread and the lock are the parent's.
    // The state is left as it is: its mutex may have been held by that
    // thread at the fork, and its descriptor is the parent's to close.
    state_.release();
    return;
  }
  [[maybe_unused]] absl::Status ignored = Release();
  state_.reset();
}

absl::Status SoftFileLock::Release() {
  if (state_ == nullptr || getpid() != state_->owner_pid ||
      state_->released.exchange(true)) {
    return absl::OkStatus();
  }
  State& state = *state_;
  // Told now, joined at the end.
  state.StopHeartbeat();
  absl::Status status;
  if (state.held.load()) {
    absl::StatusOr<std::unique_ptr<BreakLock>> guard =
        TakeBreakLock(state.parts, state.fd, state.options);
    if (!guard.ok()) {
      status = guard.status();
    } else if (state.StillOurs()) {
      if (unlink(state.parts.path.c_str()) != 0) {
        status = PosixError(absl::StrCat(state.parts.path, ": unlink"), errno);
      }
    } else {
      state.MarkLost();
    }
  }
  if (status.ok() && !state.held.load()) {
    status = absl::AbortedError(absl::StrCat(
        state.parts.path,
        ": the lock had been broken by another process while held; the "
        "path was left alone (it may be a successor's lock)"));
  }
  state.held.store(false);
  if (state.heartbeat.joinable()) state.heartbeat.join();
  return status;
}

bool SoftFileLock::held() const {
  if (state_ == nullptr || getpid() != state_->owner_pid ||
      state_->released.load() || !state_->held.load()) {
    return false;
  }
  if (!state_->StillOurs()) {
    state_->MarkLost();
    return false;
  }
  return true;
}

CancellationToken SoftFileLock::lost() const {
  if (state_ == nullptr) return CancellationToken();
  return state_->lost;
}

const std::string& SoftFileLock::path() const {
  static const std::string* const none = new std::string();
  return state_ == nullptr ? *none : state_->parts.path;
}

}  // namespace onlyone
