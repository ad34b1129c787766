// Wakes a thread that is blocked in flock(2) when its deadline passes or its
// CancellationToken is cancelled, without polling.
//
// Why a signal: flock(2) has no timeout and no way to be woken other than a
// signal (closing the descriptor from another thread does not wake it). So a
// timed or cancellable wait calls the plain blocking flock(2), and a POSIX
// timer (timer_create with SIGEV_THREAD_ID) sends a signal to exactly that
// thread when the deadline passes; Cancel() re-arms the same timer to fire
// at once. The thread burns no CPU while it waits and, when the holder
// releases, the kernel wakes it directly: the hand-off costs raw flock's
// wake-up plus the few system calls that end the wait (a disarm of the
// timer if it was armed, and restoring the signal mask if the thread had
// the signal blocked). Each thread keeps one timer for all its waits,
// created by its first timed or cancellable wait and deleted when the
// thread ends; a fork child forgets the forking thread's (timers are not
// inherited).
//
// How the application's signals are left alone:
//  * The signal is a real-time signal that nobody has a handler for: the
//    first wait scans SIGRTMAX down to SIGRTMIN and takes the first one whose
//    disposition is SIG_DFL, installing a handler that does nothing (without
//    SA_RESTART, so flock returns EINTR). If every real-time signal is taken,
//    timed and cancellable waits fail with ResourceExhausted.
//  * The signal is only ever sent by the waiting thread's own timer, to that
//    thread, while it waits; the timer is disarmed before the wait returns
//    (a signal it had already sent reaches the no-op handler as the disarm
//    returns). Other threads never see it.
//  * The waiting thread unblocks the signal only for the wait and restores
//    its signal mask afterwards, so it works in programs that block all
//    signals (for example to read them through signalfd).
//
// The check-then-block race (the deadline passes between the last check and
// entering flock) is closed by arming the timer with a 1 ms interval: after
// the deadline it keeps firing until the wait ends.
//
// Thread safety: an InterruptibleWait belongs to the thread that made it and
// must be destroyed on that thread.

#ifndef ONLYONE_LIB_INTERNAL_INTERRUPTIBLE_WAIT_H_
#define ONLYONE_LIB_INTERNAL_INTERRUPTIBLE_WAIT_H_

#include <signal.h>
#include <time.h>

#include <atomic>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "onlyone/internal/cancellation_state.h"

namespace onlyone::internal {

// Shared state behind CancellationToken: the flag and the timers of the waits
// that use it, so Cancel() can fire them.
//
// fork(): a child may cancel, or destroy, a token it inherited. Every live
// state is in a registry whose pthread_atfork handlers lock the states'
// mutexes before the fork and unlock them after it in both processes, so
// the child never inherits a mutex held by a thread that does not exist
// there, nor a timer set caught half-updated. In the child the timers are
// the parent's (POSIX timers are not inherited, and the child's own timers
// may get the same ids): the child handler marks them, and the child's
// first Cancel(), Register() or Unregister() forgets them unfired. The
// parent's waits are not affected by anything the child does.
//
// Cost: constructing and destroying a state takes the registry's mutex;
// Cancel(), IsCancelled(), Register() and Unregister() cost what they did.
// A fork() locks every live state's mutex, so it waits only while one is
// held (a few instructions, a few timer_settime calls in Cancel()), never
// for a lock wait.
// Returns CLOCK_MONOTONIC as an absl::Time; deadlines of waits are on this
// clock so that setting the wall clock neither shortens nor stretches them.
absl::Time MonotonicNow();

// Returns the real-time signal used to interrupt waits, choosing and
// installing it on first use; an error if none is free.
absl::StatusOr<int> InterruptSignal();

class InterruptibleWait final : public CancellationWaker {
 public:
  enum class Outcome { kKeepWaiting, kDeadlineExceeded, kCancelled };

  // Arms an interruption for the calling thread at `deadline` (on the
  // MonotonicNow() clock; may be absl::InfiniteFuture()) or when `cancellation` is cancelled. Returns
  // Cancelled if it already is.
  static absl::StatusOr<std::unique_ptr<InterruptibleWait>> Start(
      absl::Time deadline, CancellationState* cancellation);

  InterruptibleWait(const InterruptibleWait&) = delete;
  InterruptibleWait& operator=(const InterruptibleWait&) = delete;
  ~InterruptibleWait();

  // Called after a blocking call returned EINTR (or before blocking): tells
  // whether the wait is over and why. Other signals (the application's) give
  // kKeepWaiting and the caller blocks again.
  Outcome Check() const;

  // Cancel() re-arms the timer to fire at once.
  void Wake() override;

 private:
  InterruptibleWait(absl::Time deadline, CancellationState* cancellation,
                    int signal, sigset_t saved_mask);

  const absl::Time deadline_;
  CancellationState* const cancellation_;  // may be null
  const int signal_;
  const sigset_t saved_mask_;
  timer_t timer_{};
  // The thread's timer (kept between waits), or one of this wait's own
  // (created and deleted by it).
  bool uses_thread_timer_ = false;
  bool timer_created_ = false;
  bool armed_ = false;  // for the deadline
  // Set by Wake(), under the cancellation state's mutex; read after
  // Unregister().
  std::atomic<bool> woken_{false};
  bool registered_ = false;
};

// While one lives on a thread, a lock wait of that thread that is cancelled
// reports the path and the reason only, without reading /proc for the
// holders. For internal waits whose status nobody reads: the semaphore's
// per-slot threads, cancelled when another slot won, where that read would
// compete for the CPU with the winner's hand-off. Does not nest.
class [[nodiscard]] UnreportedCancellationScope {
 public:
  UnreportedCancellationScope();
  UnreportedCancellationScope(const UnreportedCancellationScope&) = delete;
  UnreportedCancellationScope& operator=(const UnreportedCancellationScope&) =
      delete;
  ~UnreportedCancellationScope();
};

// Whether the calling thread is inside an UnreportedCancellationScope.
bool CancellationUnreported();

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_INTERRUPTIBLE_WAIT_H_
