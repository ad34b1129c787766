// SoftFileLock: a lock file for filesystems where flock(2) cannot be trusted
// (NFS without a lock manager, SMB with nobrl, FUSE; see
// lib/flock_trust.h). No kernel lock is involved: the lock is held by
// whoever links its own record file to the path with link(2), which is
// atomic on every such filesystem, and a heartbeat shows that the holder
// lives. docs/design.md ("SoftFileLock") gives the algorithm and its race
// and clock reasoning.
//
// Example:
//   onlyone::SoftLockOptions options;
//   options.timeout = absl::Minutes(5);
//   absl::StatusOr<onlyone::SoftFileLock> lock =
//       onlyone::SoftFileLock::Acquire("/mnt/share/nightly.lock", options);
//   if (!lock.ok()) return lock.status();  // names the path and the holder
//   RunNightlyJob(lock->lost());  // cancelled if another host broke it
//   return lock->Release();
//
// Contract:
//  * Exclusion: one holder at a time, across processes and hosts that share
//    the directory. Two SoftFileLocks on one path exclude each other even in
//    one thread (a second Acquire() there waits, or is refused on a try).
//  * The lock file holds the holder's record (host, boot id, pid, process
//    start time, command line, uid, a nonce, when taken); its mtime, set on
//    the filesystem's clock, is refreshed by a heartbeat thread every
//    stale_after/3 while held.
//  * Stale locks:
//      - a holder on this host (same boot id and pid namespace) is broken at
//        once when its process is gone (no such pid, or another start
//        time), or when the record's host is this host but its boot id is
//        not (this host rebooted; host names must be unique among the hosts
//        that share the directory), and never while its process lives,
//        stopped or not;
//      - any other holder, and a lock file whose record cannot be read, is
//        broken only after stale_after without a heartbeat, measured on the
//        filesystem's clock (the mtime of a file we touch in the directory),
//        never on the local clock;
//      - breaking and releasing are serialised by a short-lived second lock,
//        PATH.break, so concurrent breakers never both end up holding the
//        lock, and Release() never deletes a successor's lock file.
//  * A holder whose lock was broken learns it: held() is false from the
//    moment the path no longer names its file (it checks), and lost() is
//    cancelled by the next heartbeat at the latest.
//  * Waiting: for a holder on this host, without polling (inotify on the
//    directory, and a pidfd on the holder so that its death wakes the
//    waiter); for other holders, polling with backoff from 10 ms up to
//    SoftLockOptions::remote_poll_interval (on NFS, inotify does not see
//    other clients' changes).
//  * Hostile paths: a symlink, directory, FIFO, socket or device at the path
//    is refused (InvalidArgument) and left untouched; so is a regular file
//    that does not hold a record (FailedPrecondition: someone's data).
//    Records are read through O_NOFOLLOW descriptors and a record whose
//    uid is not its file's owner is treated as unreadable.
//  * Files: while acquiring, a record file .NAME.softlock-NONCE next to the
//    lock (removed before Acquire() returns); PATH.break for the moment of a
//    break or a release. Nothing is left behind by a release.
//  * fork(): a child's copy is not held; its Release() and destructor do
//    nothing (the parent keeps the lock and its heartbeat).
//  * exec(): the lock is not inherited (it lives in this process's
//    heartbeat thread).
//  * Thread safety: Acquire() and Holder() from any number of threads; one
//    SoftFileLock from one thread at a time, lost() from any thread.
//
// Status codes of Acquire() are those of ScopedFileLock::Acquire()
// (lib/scoped_file_lock.h): Unavailable on a try, DeadlineExceeded,
// Cancelled, InvalidArgument (bad path or options, a non-regular file at the
// path), NotFound (no directory), PermissionDenied, FailedPrecondition (the
// file at the path holds no record; hard links are not supported there);
// refusals name the path and the holder (host, pid, since, command).

#ifndef ONLYONE_LIB_SOFT_FILE_LOCK_H_
#define ONLYONE_LIB_SOFT_FILE_LOCK_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/cancellation.h"

namespace onlyone {

struct SoftLockOptions {
  absl::Duration timeout = absl::InfiniteDuration();  // ZeroDuration(): try once
  std::optional<CancellationToken> cancellation;
  // A lock held from another host is broken only when its holder's heartbeat
  // is older than this. Never applied to a live holder on this host.
  absl::Duration stale_after = absl::Seconds(30);
  // The longest pause between two looks at a lock held from another host
  // (or whose record cannot be read): the pauses start at 10 ms and double
  // up to this. Shorter means a prompter hand-off across hosts and more
  // requests to the file server.
  absl::Duration remote_poll_interval = absl::Seconds(1);
  // The command the holder's record names; empty: this process's command
  // line. A supervisor names the command it runs (`onlyone run` records
  // COMMAND, as it does in an instance lock's owner record).
  std::vector<std::string> recorded_command_line;
};

// Who holds a soft lock, for messages and `onlyone status`.
struct SoftLockHolder {
  // False when the lock file's record cannot be read (see the garbage rule
  // in docs/design.md); then only `heartbeat_age` and `stale` mean anything.
  bool record_readable = false;
  std::string host;
  std::string boot_id;
  pid_t pid = 0;
  uid_t uid = 0;
  absl::Time process_started = absl::InfinitePast();
  absl::Time since = absl::InfinitePast();  // when the lock was taken
  std::vector<std::string> command_line;
  std::string nonce;
  // Same boot and pid namespace as the caller: `alive` is then known.
  bool on_this_host = false;
  bool alive = false;  // on this host only
  // Age of the last heartbeat, on the filesystem's clock when a file could
  // be touched in the directory, else on the local clock.
  absl::Duration heartbeat_age = absl::ZeroDuration();
  // Whether an Acquire() with `stale_after` would break it now.
  bool stale = false;
};

class SoftFileLock {
 public:
  // Takes the lock at `path` (created if missing); see the contract above.
  [[nodiscard]] static absl::StatusOr<SoftFileLock> Acquire(
      absl::string_view path, const SoftLockOptions& options = {});

  // The holder of the lock at `path`; nullopt when it is free. `options`
  // gives stale_after for SoftLockHolder::stale. Errors as Acquire()'s.
  [[nodiscard]] static absl::StatusOr<std::optional<SoftLockHolder>> Holder(
      absl::string_view path, const SoftLockOptions& options = {});

  SoftFileLock(SoftFileLock&& other) noexcept;
  SoftFileLock& operator=(SoftFileLock&& other) noexcept;
  SoftFileLock(const SoftFileLock&) = delete;
  SoftFileLock& operator=(const SoftFileLock&) = delete;
  // Releases, ignoring errors (Release() reports them).
  ~SoftFileLock();

  // Removes the lock file if it is still this holder's; idempotent. Aborted
  // when the lock had been broken by another process (nothing is removed:
  // the path may be a successor's lock).
  [[nodiscard]] absl::Status Release();

  // False once released, in a fork() child, or once another process broke
  // the lock (checked on each call: one lstat(2)).
  bool held() const;

  // Cancelled when the lock is found broken (by held() or the heartbeat).
  CancellationToken lost() const;

  const std::string& path() const;

  struct State;

 private:
  explicit SoftFileLock(std::unique_ptr<State> state);
  void Reset();

  std::unique_ptr<State> state_;
};

}  // namespace onlyone

#endif  // ONLYONE_LIB_SOFT_FILE_LOCK_H_
