#include "onlyone/internal/lock_table.h"

#include <pthread.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "onlyone/internal/fork_safe_mutex.h"
#include "onlyone/internal/posix_error.h"

namespace onlyone::internal {
namespace {

// The fork handlers lock the table in the parent and unlock it in the child,
// hence a ForkSafeMutex.
struct LockTable {
  ForkSafeMutex mutex;
  absl::flat_hash_map<HeldFile*, std::unique_ptr<HeldFile>> files
      ABSL_GUARDED_BY(mutex);
};

// Built on first use, so that locks taken by other files' static
// initialisers find it; leaked so that static destructors can still release.
LockTable& Table() {
  static LockTable* const table = new LockTable;
  return *table;
}

// The fork guard first: a thread inside a HoldOffFork may be waiting for
// the table's mutex, which must still be free then.
void LockTableBeforeFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  ForkGuard().Lock();
  Table().mutex.Lock();
}

void UpdateTableInParent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  LockTable& table = Table();
  for (auto& [key, file] : table.files) {
    if (file->hand_off_on_fork && file->owned) {
      file->owned = false;
      file->hand_off_on_fork = false;
    }
  }
  table.mutex.Unlock();
  ForkGuard().Unlock();
}

// Runs in the single-threaded child: only async-signal-safe calls.
void UpdateTableInChild() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  LockTable& table = Table();
  for (auto& [key, file] : table.files) {
    if (file->hand_off_on_fork && file->owned) {
      file->holder_thread = pthread_self();
      file->hand_off_on_fork = false;
      continue;
    }
    file->owned = false;
    if (!file->inheritable && file->fd >= 0) {
      close(file->fd);
      file->fd = -1;
    }
  }
  table.mutex.Unlock();
  ForkGuard().ResetInForkChild();
}

void InstallForkHandlers() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    pthread_atfork(LockTableBeforeFork, UpdateTableInParent,
                   UpdateTableInChild);
  });
}

}  // namespace

ForkSafeSharedMutex& ForkGuard() {
  static ForkSafeSharedMutex* const guard = new ForkSafeSharedMutex;
  return *guard;
}

HoldOffFork::HoldOffFork() {
  // Before the guard is taken: a fork() that ran no handler of ours would
  // not wait for it.
  InstallForkHandlers();
  ForkGuard().ReaderLock();
}

HoldOffFork::~HoldOffFork() { ForkGuard().ReaderUnlock(); }

HeldFile* TrackOpenedFile(int fd, std::string path, dev_t device,
                          ino_t inode) {
  auto file = std::make_unique<HeldFile>();
  file->fd = fd;
  file->path = std::move(path);
  file->device = device;
  file->inode = inode;
  HeldFile* key = file.get();
  LockTable& table = Table();
  ForkSafeLock lock(&table.mutex);
  table.files.emplace(key, std::move(file));
  return key;
}

void MarkAcquired(HeldFile* file, bool exclusive, bool recursive,
                  bool inheritable) {
  LockTable& table = Table();
  ForkSafeLock lock(&table.mutex);
  file->exclusive = exclusive;
  file->recursive = recursive;
  file->inheritable = inheritable;
  file->owned = true;
  file->holder_thread = pthread_self();
}

bool TracksDescriptor(int fd) {
  LockTable& table = Table();
  ForkSafeLock lock(&table.mutex);
  for (const auto& [key, file] : table.files) {
    if (file->fd == fd) return true;
  }
  return false;
}

Reacquisition AddAcquisitionIfHeldByCallingThread(dev_t device, ino_t inode,
                                                  bool recursive,
                                                  bool want_exclusive) {
  const pthread_t self = pthread_self();
  LockTable& table = Table();
  ForkSafeLock lock(&table.mutex);
  for (auto& [key, file] : table.files) {
    if (file->device != device || file->inode != inode || !file->owned ||
        !pthread_equal(file->holder_thread, self)) {
      continue;
    }
    Reacquisition found;
    found.file = key;
    found.exclusive = file->exclusive;
    if (!recursive) {
      found.outcome = Reacquisition::Outcome::kWouldDeadlock;
    } else if (want_exclusive && !file->exclusive) {
      found.outcome = Reacquisition::Outcome::kWouldUpgrade;
    } else {
      ++file->acquisitions;
      found.outcome = Reacquisition::Outcome::kCounted;
    }
    return found;
  }
  return Reacquisition{};
}

bool OwnedHere(const HeldFile* file) {
  LockTable& table = Table();
  ForkSafeLock lock(&table.mutex);
  return file->owned;
}

void MarkHandOffOnFork(HeldFile* file) {
  LockTable& table = Table();
  ForkSafeLock lock(&table.mutex);
  file->hand_off_on_fork = true;
}

absl::Status ReleaseAcquisition(HeldFile* file) {
  // Taken before the table's mutex (the lock order), even for a nested
  // release that closes nothing.
  HoldOffFork no_fork_until_closed;
  std::unique_ptr<HeldFile> last;
  {
    LockTable& table = Table();
    ForkSafeLock lock(&table.mutex);
    if (--file->acquisitions > 0) return absl::OkStatus();
    auto node = table.files.extract(file);
    last = std::move(node.mapped());
  }
  absl::Status status;
  if (last->fd < 0) return status;
  // Unlocked before the close, for two reasons. Another process may share
  // the open file description (an inherited or handed-off lock), and then
  // close() alone would leave the lock held by it. And a waiter is woken
  // inside flock(LOCK_UN), whereas close() wakes it only after tearing the
  // file down on its way back to user space: on one CPU that teardown delayed
  // every hand-off and lengthened every contended critical section
  // (docs/performance.md). The close then finds no lock to remove, so the
  // extra call costs little more than its entry into the kernel.
  if (last->owned && flock(last->fd, LOCK_UN) != 0) {
    status = PosixError(absl::StrCat(last->path, ": unlock"), errno);
  }
  if (close(last->fd) != 0 && status.ok()) {
    status = PosixError(absl::StrCat(last->path, ": close"), errno);
  }
  return status;
}

}  // namespace onlyone::internal
