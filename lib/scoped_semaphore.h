// ScopedSemaphore: one of N permits across processes, e.g. at most 2 GPU jobs
// or 4 encoders on a machine; a crash-safe, poll-free counting semaphore made
// of N kernel file locks.
//
// Example:
//   absl::StatusOr<onlyone::ScopedSemaphore> permit =
//       onlyone::ScopedSemaphore::Acquire("/run/lock/encoders", 4);
//   if (!permit.ok()) return permit.status();  // names the path and holders
//   Encode(permit->slot());
//   // The destructor releases the permit; Release() reports errors instead.
//
// Contract:
//  * Files: for path = DIRECTORY/NAME, permit i is the flock(2) lock on
//    DIRECTORY/NAME.ii.lock (two digits at least: NAME.00.lock, NAME.01.lock,
//    ...), portalocker's BoundedSemaphore naming, so that
//    portalocker.BoundedSemaphore(N, name=NAME, directory=DIRECTORY) and
//    onlyone share one limit. Each permit is a ScopedFileLock, so crash
//    release, fork and exec behave as the core lock's (scoped_file_lock.h).
//    Two more files: DIRECTORY/NAME.slots records the number of slots (see
//    "Slot counts") and DIRECTORY/NAME.gate.lock queues the waiters. No file
//    is ever truncated or removed.
//  * Blocking: Acquire() with the default options waits until a permit is
//    free, without polling: waiters queue on the gate lock, and the one at
//    the head waits in flock(2) on every slot at once (one thread per slot),
//    so the kernel wakes it when any holder releases or dies
//    (docs/design.md, "ScopedSemaphore"). SemaphoreOptions::timeout bounds
//    the wait (ZeroDuration() tries each slot once), ::cancellation lets
//    another thread stop it. Not fair: a try may take a permit freed while
//    a waiter is being woken.
//  * Slot counts: the first caller records its count in NAME.slots; a caller
//    that asks for another count gets FailedPrecondition naming both counts
//    and the record (remove NAME.slots while no permit is held to change
//    it). Each thread checks the record once per path. Callers that do not
//    read the record (portalocker) are seen when they hold slots beyond
//    ours: a refusal names them.
//  * A thread may hold several permits of one semaphore; waiting for one
//    while its own permits fill every slot waits for ever (as a counting
//    semaphore does).
//  * Thread safety: Acquire() may be called from any number of threads. One
//    ScopedSemaphore object is used from one thread at a time.
//
// Status codes of Acquire():
//  * Unavailable: every permit taken, on a try; the message names the path
//    and each slot's holder (pid, command, start time);
//  * DeadlineExceeded: the timeout passed while waiting; Cancelled: the
//    token was cancelled before or during a wait;
//  * InvalidArgument: slots < 1 or > kMaxSemaphoreSlots, an empty path, a
//    path ending in '/', '.' or '..', a NUL byte, a negative timeout, a
//    file mode outside 07777, or a slot file that is not a regular file;
//  * NotFound: the directory does not exist;
//  * FailedPrecondition: the slot count disagrees with NAME.slots, or the
//    filesystem refused the lock;
//  * otherwise as ScopedFileLock::Acquire() on a slot file.
// Every message names the path.

#ifndef ONLYONE_LIB_SCOPED_SEMAPHORE_H_
#define ONLYONE_LIB_SCOPED_SEMAPHORE_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/cancellation.h"
#include "onlyone/scoped_file_lock.h"

namespace onlyone {

// A waiter blocks one thread per slot, so the count is bounded.
inline constexpr int kMaxSemaphoreSlots = 64;

// What the semaphore's files get: the backend's own options
// (lib/semaphore_backend.h).
struct SemaphoreFileOptions {
  // Permission bits of the files this call creates, applied exactly.
  mode_t file_mode = kDefaultLockFileMode;
  // Whether the permit's descriptor is kept across exec() (see
  // FileLockOptions::inheritable); an exec'd program takes it over with
  // ScopedSemaphore::AdoptInherited().
  bool inheritable = false;
};

struct SemaphoreOptions : SemaphoreFileOptions {
  absl::Duration timeout = absl::InfiniteDuration();  // ZeroDuration(): try once
  std::optional<CancellationToken> cancellation;
};

// Who holds one slot, as /proc/locks and /proc/PID tell.
struct SemaphoreSlotHolder {
  int slot = 0;
  std::string file;       // DIRECTORY/NAME.ii.lock
  pid_t pid = 0;
  std::string command;    // /proc/PID/comm, as the process named itself
  std::optional<absl::Time> started;  // unknown when /proc hides it
};

class ScopedSemaphore {
 public:
  // Takes one of `slots` permits of the semaphore named by `path`.
  [[nodiscard]] static absl::StatusOr<ScopedSemaphore> Acquire(
      absl::string_view path, int slots, const SemaphoreOptions& options = {});

  // In a program exec'd with an inheritable permit, takes it over (see
  // ScopedFileLock::AdoptInherited()). NotFound if no slot's lock was
  // inherited.
  [[nodiscard]] static absl::StatusOr<ScopedSemaphore> AdoptInherited(
      absl::string_view path, int slots);

  // The lock file of permit `slot`: DIRECTORY/NAME.ii.lock.
  static std::string SlotPath(absl::string_view path, int slot);

  // The slot count that DIRECTORY/NAME.slots records (see "Slot counts"):
  // nullopt when there is no record (the semaphore was never used by
  // onlyone); FailedPrecondition when the file is not a record.
  [[nodiscard]] static absl::StatusOr<std::optional<int>> RecordedSlots(
      absl::string_view path);

  // The gate lock where waiters queue: DIRECTORY/NAME.gate.lock.
  static std::string GatePath(absl::string_view path);

  // The holders of slots 0 .. slots-1, and of any held slot files beyond
  // (a caller with a larger count), in slot order. Reads /proc each call.
  static std::vector<SemaphoreSlotHolder> Holders(absl::string_view path,
                                                  int slots);

  ScopedSemaphore(ScopedSemaphore&& other) noexcept;
  ScopedSemaphore& operator=(ScopedSemaphore&& other) noexcept;
  ScopedSemaphore(const ScopedSemaphore&) = delete;
  ScopedSemaphore& operator=(const ScopedSemaphore&) = delete;
  ~ScopedSemaphore();  // releases; errors are lost here

  // Releases the permit. Idempotent: later calls return OK. In a fork()
  // child it only closes the child's descriptor.
  [[nodiscard]] absl::Status Release();

  // Whether this object holds its permit for this process: false after
  // Release(), after a move, and in a fork()ed child.
  bool held() const;

  // Which permit, 0 .. slots-1; -1 after Release() or a move.
  int slot() const { return slot_; }

  const std::string& path() const { return path_; }
  int slots() const { return slots_; }

  // The permit's lock (for HandOffOnFork() and InheritedLocksEnvValue());
  // nullptr after Release() or a move.
  ScopedFileLock* slot_lock() { return lock_ ? &*lock_ : nullptr; }
  const ScopedFileLock* slot_lock() const { return lock_ ? &*lock_ : nullptr; }

 private:
  ScopedSemaphore(std::string path, int slots, int slot, ScopedFileLock lock);

  std::string path_;
  int slots_;
  int slot_;
  std::optional<ScopedFileLock> lock_;
};

}  // namespace onlyone

#endif  // ONLYONE_LIB_SCOPED_SEMAPHORE_H_
