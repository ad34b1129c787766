#include "lib/internal/lock_table.h"

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
#include "lib/internal/posix_error.h"

namespace onlyone::internal {
namespace {

// A pthread mutex rather than absl::Mutex because the fork handlers lock it
// in the parent and unlock it in the child, which POSIX defines for a plain
// pthread mutex; absl::Mutex keeps waiter lists that would name threads the
// child does not have.
class ABSL_LOCKABLE ForkSafeMutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_mutex_lock(&mutex_); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { pthread_mutex_unlock(&mutex_); }

 private:
  pthread_mutex_t mutex_ = PTHREAD_MUTEX_INITIALIZER;
};

class ABSL_SCOPED_LOCKABLE TableLock {
 public:
  explicit TableLock(ForkSafeMutex* mutex) ABSL_EXCLUSIVE_LOCK_FUNCTION(mutex)
      : mutex_(mutex) {
    mutex_->Lock();
  }
  ~TableLock() ABSL_UNLOCK_FUNCTION() { mutex_->Unlock(); }

 private:
  ForkSafeMutex* const mutex_;
};

ForkSafeMutex table_mutex;
// Leaked on purpose: locks may be released from static destructors.
auto* const table ABSL_PT_GUARDED_BY(table_mutex) =
    new absl::flat_hash_map<HeldFile*, std::unique_ptr<HeldFile>>();

void LockTableBeforeFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  table_mutex.Lock();
}

void UpdateTableInParent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  for (auto& [key, file] : *table) {
    if (file->hand_off_on_fork && file->owner_pid == getpid()) {
      file->owner_pid = 0;
    }
  }
  table_mutex.Unlock();
}

// Runs in the single-threaded child: only async-signal-safe calls.
void UpdateTableInChild() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  const pid_t child = getpid();
  for (auto& [key, file] : *table) {
    const bool parent_owned = file->owner_pid != 0;
    if (file->hand_off_on_fork && parent_owned) {
      file->owner_pid = child;
      file->holder_thread = gettid();
      continue;
    }
    file->owner_pid = 0;
    if (!file->inheritable && file->fd >= 0) {
      close(file->fd);
      file->fd = -1;
    }
  }
  table_mutex.Unlock();
}

void InstallForkHandlers() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    pthread_atfork(LockTableBeforeFork, UpdateTableInParent,
                   UpdateTableInChild);
  });
}

}  // namespace

HeldFile* AddHeldFile(HeldFile file) {
  InstallForkHandlers();
  auto owned = std::make_unique<HeldFile>(std::move(file));
  HeldFile* key = owned.get();
  TableLock lock(&table_mutex);
  table->emplace(key, std::move(owned));
  return key;
}

HeldFile* FindHeldByCallingThread(dev_t device, ino_t inode) {
  const pid_t self = gettid();
  const pid_t process = getpid();
  TableLock lock(&table_mutex);
  for (auto& [key, file] : *table) {
    if (file->device == device && file->inode == inode &&
        file->holder_thread == self && file->owner_pid == process) {
      return key;
    }
  }
  return nullptr;
}

void AddAcquisition(HeldFile* file) {
  TableLock lock(&table_mutex);
  ++file->acquisitions;
}

bool OwnedHere(const HeldFile* file) {
  TableLock lock(&table_mutex);
  return file->owner_pid != 0 && file->owner_pid == getpid();
}

void MarkHandOffOnFork(HeldFile* file) {
  TableLock lock(&table_mutex);
  file->hand_off_on_fork = true;
}

absl::Status ReleaseAcquisition(HeldFile* file) {
  std::unique_ptr<HeldFile> last;
  {
    TableLock lock(&table_mutex);
    if (--file->acquisitions > 0) return absl::OkStatus();
    auto node = table->extract(file);
    last = std::move(node.mapped());
  }
  absl::Status status;
  if (last->fd < 0) return status;
  // Unlock explicitly rather than relying on close(): a forked child may
  // still share the open file description, and close() alone would leave
  // the lock held by that child.
  if (last->owner_pid == getpid() && flock(last->fd, LOCK_UN) != 0) {
    status = PosixError(absl::StrCat(last->path, ": unlock"), errno);
  }
  if (close(last->fd) != 0 && status.ok()) {
    status = PosixError(absl::StrCat(last->path, ": close"), errno);
  }
  return status;
}

}  // namespace onlyone::internal
