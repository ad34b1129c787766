// The state behind CancellationToken: the flag, and the wakers of the waits
// that use it, so that Cancel() wakes every kind of wait without polling.
//
// A wait registers a CancellationWaker for as long as it blocks. Cancel()
// calls every registered waker's Wake() once, on the cancelling thread. Each
// kind of wait brings its own waker:
//  * a thread blocked in flock(2): a POSIX timer re-armed to fire at once
//    (interruptible_wait.h), which interrupts the call with a signal;
//  * a thread blocked in poll(2) on sockets, inotify or pidfds: an eventfd
//    among the polled descriptors (CancellationEventFd below);
//  * a thread blocked on a condition variable: a notify under the waiter's
//    mutex (WaitCancellable below).
//
// Contract:
//  * Wake() runs with the state's mutex held: it must be short, must not
//    block, and must not call back into this state. After Unregister()
//    returns, the waker is not running and will not run, so a waiter may
//    destroy it.
//  * Thread safety: every member is thread-safe.
//  * fork(): pthread_atfork handlers take every state's mutex around the
//    fork, so a child never inherits one held by a vanished thread. In the
//    child, the wakers registered before the fork belong to the parent's
//    waits (their timers and eventfds are the parent's): the child drops
//    them at its first use of the state, so its Cancel() can neither
//    deadlock nor cancel the parent's waits.

#ifndef ONLYONE_LIB_INTERNAL_CANCELLATION_STATE_H_
#define ONLYONE_LIB_INTERNAL_CANCELLATION_STATE_H_

#include <condition_variable>
#include <memory>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "onlyone/internal/fork_safe_mutex.h"

namespace onlyone::internal {

// What Cancel() calls to end one wait.
class CancellationWaker {
 public:
  virtual void Wake() = 0;

 protected:
  ~CancellationWaker() = default;
};

class CancellationState {
 public:
  CancellationState();
  CancellationState(const CancellationState&) = delete;
  CancellationState& operator=(const CancellationState&) = delete;
  ~CancellationState();

  // Sets the flag and wakes every registered waiter, once.
  void Cancel();
  bool IsCancelled() const;

  // Adds `waker`; returns false (and adds nothing) if already cancelled.
  [[nodiscard]] bool Register(CancellationWaker* waker);
  void Unregister(CancellationWaker* waker);

  // For the registry's fork handlers only.
  void LockForFork() ABSL_EXCLUSIVE_LOCK_FUNCTION(mu_);
  void UnlockInParent() ABSL_UNLOCK_FUNCTION(mu_);
  void UnlockInChild() ABSL_UNLOCK_FUNCTION(mu_);

 private:
  // Forgets, in a fork child, the wakers registered before the fork.
  void DropWakersFromParent() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable ForkSafeMutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<CancellationWaker*> wakers_ ABSL_GUARDED_BY(mu_);
  // Set by the fork child handler: wakers_ names the parent's waits.
  bool wakers_from_parent_ ABSL_GUARDED_BY(mu_) = false;
};

// An eventfd that becomes readable when `state` is cancelled, for a wait in
// poll(2): put fd() among the polled descriptors. Registered from Create()
// to destruction.
class CancellationEventFd final : public CancellationWaker {
 public:
  // Cancelled if `state` already is.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<CancellationEventFd>>
  Create(CancellationState& state);
  CancellationEventFd(const CancellationEventFd&) = delete;
  CancellationEventFd& operator=(const CancellationEventFd&) = delete;
  ~CancellationEventFd();

  int fd() const { return fd_; }
  void Wake() override;

 private:
  CancellationEventFd(CancellationState& state, int fd);

  CancellationState& state_;
  const int fd_;
  bool registered_ = false;
};

// Waits on `condition` (with `lock` held, as std::condition_variable::wait
// does) until `done()` is true, `deadline` (absl::Now() clock;
// InfiniteFuture() for none) passes, or `state` (may be null) is cancelled:
// OK, DeadlineExceeded or Cancelled. Cancel() notifies `condition` under
// `lock`'s mutex, so no wake-up is lost and nothing polls.
template <typename Done>
absl::Status WaitCancellable(std::unique_lock<std::mutex>& lock,
                             std::condition_variable& condition, Done done,
                             absl::Time deadline, CancellationState* state);

// ---------------------------------------------------------------------------
// Implementation details.

namespace cancellation_internal {

// Wakes a condition-variable wait. Its flag is guarded by the waiter's
// mutex, which Wake() takes under the state's: the waiter never asks the
// state (that would take the two mutexes in the other order).
class ConditionWaker final : public CancellationWaker {
 public:
  ConditionWaker(std::mutex& mutex, std::condition_variable& condition)
      : mutex_(mutex), condition_(condition) {}
  void Wake() override {
    std::lock_guard<std::mutex> hold(mutex_);
    woken_ = true;
    condition_.notify_all();
  }
  // With the waiter's mutex held.
  bool woken() const { return woken_; }

 private:
  std::mutex& mutex_;
  std::condition_variable& condition_;
  bool woken_ = false;
};

}  // namespace cancellation_internal

template <typename Done>
absl::Status WaitCancellable(std::unique_lock<std::mutex>& lock,
                             std::condition_variable& condition, Done done,
                             absl::Time deadline, CancellationState* state) {
  cancellation_internal::ConditionWaker waker(*lock.mutex(), condition);
  // Registered without the waiter's mutex: Wake() takes it.
  lock.unlock();
  const bool registered = state == nullptr || state->Register(&waker);
  lock.lock();
  absl::Status status;
  for (;;) {
    if (done()) break;
    if (!registered || waker.woken()) {
      status = absl::CancelledError("cancelled while waiting");
      break;
    }
    if (deadline == absl::InfiniteFuture()) {
      condition.wait(lock);
    } else if (condition.wait_until(lock, absl::ToChronoTime(deadline)) ==
                   std::cv_status::timeout &&
               !done()) {
      status = absl::DeadlineExceededError("deadline passed while waiting");
      break;
    }
  }
  if (registered && state != nullptr) {
    lock.unlock();
    state->Unregister(&waker);
    lock.lock();
  }
  return status;
}

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_CANCELLATION_STATE_H_
