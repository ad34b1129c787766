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
// Descriptors are tracked from right after open(), before the possibly long
// wait for the lock, so that a child forked by another thread during the wait
// does not keep the lock alive either.
// The handlers run for fork() and daemon(3). glibc's system(3), popen(3) and
// posix_spawn(3), a raw clone(2) and vfork(2) skip them; those children exec
// at once, and O_CLOEXEC closes the descriptor there.
//
// Thread safety: all functions are thread-safe.

#ifndef ONLYONE_LIB_INTERNAL_LOCK_TABLE_H_
#define ONLYONE_LIB_INTERNAL_LOCK_TABLE_H_

#include <pthread.h>
#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

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
  // Whether another process may hold this open file description: inherited
  // by exec'd or forked children (inheritable), received by a fork hand-off
  // (the parent may still have it open), or adopted after exec (the
  // parent that passed it has it). Only then does releasing need an
  // explicit unlock; otherwise closing the last descriptor releases it.
  bool description_shared = false;
};

// Starts tracking a freshly opened, not yet locked descriptor; the table
// owns it from now on (a fork child closes it) and the entry is not owned
// until MarkAcquired(). Undo with ReleaseAcquisition().
HeldFile* TrackOpenedFile(int fd, std::string path, dev_t device,
                          ino_t inode);

// Records that the calling thread now holds the tracked file's lock;
// `adopted` when the descriptor was inherited across exec.
void MarkAcquired(HeldFile* file, bool exclusive, bool recursive,
                  bool inheritable, bool adopted);

// Whether some entry tracks descriptor `fd` (AdoptInherited must not adopt a
// descriptor twice).
bool TracksDescriptor(int fd);

// Finds a lock on (device, inode) that the calling thread acquired and this
// process owns; nullptr if none.
HeldFile* FindHeldByCallingThread(dev_t device, ino_t inode);

// Counts one more acquisition of a recursive entry.
void AddAcquisition(HeldFile* file);

// Undoes one acquisition; the last one closes the descriptor, unlocking
// first if another process may share the description, and forgets the entry
// (also for an entry never marked acquired). Errors from flock(2) and close(2) are returned.
absl::Status ReleaseAcquisition(HeldFile* file);

// Whether this process owns the entry's kernel lock.
bool OwnedHere(const HeldFile* file);

// Marks the entry so the next fork() hands the lock to the child (once).
void MarkHandOffOnFork(HeldFile* file);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_LOCK_TABLE_H_
