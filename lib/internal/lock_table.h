// The table of kernel file locks this process holds.
//
// Why it exists: flock(2) locks belong to open file descriptions, so two
// ScopedFileLocks on one file in one process already exclude each other in the
// kernel, as two processes do (unlike POSIX fcntl locks, which a process never
// conflicts with itself on). What the kernel cannot do is tell a thread that
// it is about to wait for a lock it holds itself, or count recursive
// acquisitions, or keep fork()ed children from holding the parent's lock
// open. This table does those three things.
//
// fork(): a pthread_atfork handler runs in the child and, for every entry,
//  * closes the descriptor, unless the lock was made inheritable or marked
//    for hand-off, so a child never keeps its parent's lock alive;
//  * marks the entry as not owned, so the child's Release() and destructors
//    never unlock the parent's lock;
//  * for an entry marked for hand-off, makes the child the owner instead, and
//    the parent's copy stops owning it (the daemon pattern); the mark is
//    spent, so later forks of the new owner hand nothing over.
// A descriptor is never open untracked while fork() can run: Acquire()
// holds a HoldOffFork from before open(2) until the entry exists,
// AdoptInherited() from taking an inherited descriptor over until then, and
// ReleaseAcquisition() from removing the entry until after close(2); the
// prepare handler waits for all of them. So a child never inherits a lock
// descriptor the table does not know of, be it locked already (the try
// before tracking) or about to be. Entries exist before the possibly long
// wait for the lock, so the wait itself does not hold off fork().
// The handlers run for fork() and daemon(3). glibc's system(3), popen(3) and
// posix_spawn(3), a raw clone(2) and vfork(2) skip them; those children exec
// at once, and O_CLOEXEC closes the descriptor there.
//
// Thread safety: all functions are thread-safe. Lock order: a HoldOffFork
// first, then the table's mutex (the functions below take it inside).

#ifndef ONLYONE_LIB_INTERNAL_LOCK_TABLE_H_
#define ONLYONE_LIB_INTERNAL_LOCK_TABLE_H_

#include <pthread.h>
#include <sys/types.h>

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "onlyone/internal/fork_safe_mutex.h"

namespace onlyone::internal {

// One kernel lock: one open file description locked with flock(2).
struct HeldFile {
  int fd = -1;  // -1 once closed in a fork child
  std::string path;
  dev_t device = 0;
  ino_t inode = 0;
  bool exclusive = true;
  // Whether this process may unlock it: false until acquired, in a fork
  // child's copy, and in the parent after a hand-off. A flag flipped by the
  // fork handlers rather than a pid compared with getpid(), which is a
  // system call on every use.
  bool owned = false;
  // The thread that acquired it, for self-deadlock detection.
  pthread_t holder_thread{};
  bool recursive = false;
  int acquisitions = 1;
  bool inheritable = false;
  bool hand_off_on_fork = false;
};

// The guard that fork() waits for; use it through HoldOffFork.
ForkSafeSharedMutex& ForkGuard();

// While one lives, fork() in any thread waits (other threads' HoldOffForks
// do not). Hold one from before a lock descriptor is opened (or, for an
// inherited one, before it is taken over) until TrackOpenedFile() returned,
// closing the descriptor inside it on failure. Must not nest, and the holder
// must not fork(), call ReleaseAcquisition() or block: keep it to a few
// non-blocking system calls. Installs the fork handlers on first use.
class [[nodiscard]] ABSL_SCOPED_LOCKABLE HoldOffFork {
 public:
  HoldOffFork() ABSL_SHARED_LOCK_FUNCTION(ForkGuard());
  HoldOffFork(const HoldOffFork&) = delete;
  HoldOffFork& operator=(const HoldOffFork&) = delete;
  ~HoldOffFork() ABSL_UNLOCK_FUNCTION();
};

// Starts tracking a freshly opened, not yet locked descriptor; the table
// owns it from now on (a fork child closes it) and the entry is not owned
// until MarkAcquired(). Undo with ReleaseAcquisition(). Call it inside the
// HoldOffFork under which the descriptor was opened.
HeldFile* TrackOpenedFile(int fd, std::string path, dev_t device,
                          ino_t inode);

// Records that the calling thread now holds the tracked file's lock.
void MarkAcquired(HeldFile* file, bool exclusive, bool recursive,
                  bool inheritable);

// Whether some entry tracks descriptor `fd` (AdoptInherited must not adopt a
// descriptor twice).
bool TracksDescriptor(int fd);

// What AddAcquisitionIfHeldByCallingThread() found.
struct Reacquisition {
  enum class Outcome {
    kNotHeld,          // not held by the calling thread: lock it anew
    kCounted,          // one more acquisition of `file` was counted
    kWouldDeadlock,    // held, and the request is not recursive
    kWouldUpgrade,     // held shared, and the request is exclusive
  };
  Outcome outcome = Outcome::kNotHeld;
  // With kCounted: the entry, kept alive by the counted acquisition (release
  // it with ReleaseAcquisition()), and the mode it is held in.
  HeldFile* file = nullptr;
  bool exclusive = false;
};

// Looks for a lock on (device, inode) that the calling thread acquired and
// this process owns and, if `recursive` and the mode allows, counts one more
// acquisition of it: all in one critical section, so that the entry cannot
// be released (by a thread the lock was moved to) between finding and
// counting it.
Reacquisition AddAcquisitionIfHeldByCallingThread(dev_t device, ino_t inode,
                                                  bool recursive,
                                                  bool want_exclusive);

// Undoes one acquisition; the last one closes the descriptor, unlocking
// first if another process may share the description, and forgets the entry
// (also for an entry never marked acquired). Errors from flock(2) and
// close(2) are returned. Holds off fork() from forgetting the entry until the
// descriptor is closed; so it must not be called under a HoldOffFork.
absl::Status ReleaseAcquisition(HeldFile* file);

// Whether this process owns the entry's kernel lock.
bool OwnedHere(const HeldFile* file);

// Marks the entry so the next fork() hands the lock to the child (once).
void MarkHandOffOnFork(HeldFile* file);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_LOCK_TABLE_H_
