// ForkSafeMutex: a mutex that a fork()ed child may use; ForkSafeSharedMutex:
// a reader/writer lock that holds off fork() while readers hold it.
//
// Why not absl::Mutex: after fork() only the forking thread exists in the
// child, but absl::Mutex keeps waiter lists naming the parent's threads and
// shares global spin locks with them; a child that locks or even destroys
// one can hang on a lock a vanished thread held. A plain pthread mutex has
// no such state, and POSIX lets pthread_atfork handlers lock it before the
// fork and unlock it in both parent and child. ThreadSanitizer also sees
// its synchronisation, which it cannot see in Debian's uninstrumented
// absl::Mutex (docs/testing.md); that is why MessageListener uses it too.
//
// Thread safety: as any mutex. The annotations let clang's
// -Wthread-safety check ABSL_GUARDED_BY members.
//
// Lock order, outermost first: the lock table's fork guard, then the lock
// table's mutex; the cancellation registry, then the CancellationStates'
// mutexes. No code holds a lock of one family while taking one of the other.

#ifndef ONLYONE_LIB_INTERNAL_FORK_SAFE_MUTEX_H_
#define ONLYONE_LIB_INTERNAL_FORK_SAFE_MUTEX_H_

#include <pthread.h>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

#include "absl/base/thread_annotations.h"

namespace onlyone::internal {

class ABSL_LOCKABLE ForkSafeMutex {
 public:
  ForkSafeMutex() = default;
  ForkSafeMutex(const ForkSafeMutex&) = delete;
  ForkSafeMutex& operator=(const ForkSafeMutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_mutex_lock(&mutex_); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { pthread_mutex_unlock(&mutex_); }

 private:
  pthread_mutex_t mutex_ = PTHREAD_MUTEX_INITIALIZER;
};

// A reader/writer lock for guarding short sections against fork(): threads
// take it shared (ReaderLock) and do not wait for each other; a
// pthread_atfork prepare handler takes it exclusively (Lock), so fork()
// waits until no thread is inside a section, and the parent handler
// releases it (Unlock) while the child handler resets it (ResetInForkChild).
//
// Writers are preferred, so a steady stream of readers cannot hold off a
// fork for ever. Hence shared holds must not nest: a thread's second
// ReaderLock() waits behind a waiting writer, which waits for the first.
//
// Cost: ReaderLock() and ReaderUnlock() are one uncontended atomic
// read-modify-write each (glibc's pthread_rwlock), no system call unless a
// fork is waiting.
class ABSL_LOCKABLE ForkSafeSharedMutex {
 public:
  ForkSafeSharedMutex() = default;
  ForkSafeSharedMutex(const ForkSafeSharedMutex&) = delete;
  ForkSafeSharedMutex& operator=(const ForkSafeSharedMutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { pthread_rwlock_wrlock(&lock_); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { pthread_rwlock_unlock(&lock_); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() {
    pthread_rwlock_rdlock(&lock_);
  }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { pthread_rwlock_unlock(&lock_); }

  // In the child, for the lock that the forking thread took with Lock().
  // pthread_rwlock_unlock() would not do: it recognises the writer by its
  // thread id, which differs in the child, and would release a read lock
  // instead. Overwriting the lock with a fresh one is a plain memory copy,
  // async-signal-safe, and right because no other thread exists there.
  void ResetInForkChild() ABSL_UNLOCK_FUNCTION() {
    const pthread_rwlock_t fresh = kUnlocked;
    lock_ = fresh;
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer saw the prepare handler's Lock() and cannot see a
    // memory copy: tell it the (single) thread released it.
    __tsan_mutex_pre_unlock(&lock_, 0);
    __tsan_mutex_post_unlock(&lock_, 0);
#endif
  }

 private:
  static constexpr pthread_rwlock_t kUnlocked =
      PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
  pthread_rwlock_t lock_ = kUnlocked;
};

// Holds a ForkSafeMutex for a scope.
class ABSL_SCOPED_LOCKABLE ForkSafeLock {
 public:
  explicit ForkSafeLock(ForkSafeMutex* mutex)
      ABSL_EXCLUSIVE_LOCK_FUNCTION(mutex)
      : mutex_(mutex) {
    mutex_->Lock();
  }
  ForkSafeLock(const ForkSafeLock&) = delete;
  ForkSafeLock& operator=(const ForkSafeLock&) = delete;
  ~ForkSafeLock() ABSL_UNLOCK_FUNCTION() { mutex_->Unlock(); }

 private:
  ForkSafeMutex* const mutex_;
};

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_FORK_SAFE_MUTEX_H_
