// ForkSafeMutex: a mutex that a fork()ed child may use.
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

#ifndef ONLYONE_LIB_INTERNAL_FORK_SAFE_MUTEX_H_
#define ONLYONE_LIB_INTERNAL_FORK_SAFE_MUTEX_H_

#include <pthread.h>

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
