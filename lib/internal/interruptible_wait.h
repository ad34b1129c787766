// Wakes a thread that is blocked in flock(2) when its deadline passes or its
// CancellationToken is cancelled, without polling.
//
// Why a signal: flock(2) has no timeout and no way to be woken other than a
// signal (closing the descriptor from another thread does not wake it). So a
// timed or cancellable wait calls the plain blocking flock(2), and a signal
// sent to exactly that thread (tgkill) interrupts it.
//
// Who sends it: one thread per process, the interrupter, started by the
// first timed or cancellable wait and blocked in ppoll(2) on an eventfd
// until the earliest deadline of the waits listed with it. A wait lists
// itself in memory when it starts and unlists itself when it ends; neither
// makes a system call unless its deadline is earlier than every other (the
// interrupter is then woken to sleep less), and nothing is disarmed when
// the lock comes. That matters for the hand-off: between the kernel's
// wake-up and Acquire() returning there is only the lock's own path check.
// Cancel() (Wake()) sets the wait's flag and writes the eventfd, so the
// interrupter signals the thread at once. A per-thread POSIX timer did the
// same until 2026-12-02, but had to be disarmed, one more system call on
// every hand-off, and armed, one more before every wait.
//
// The thread burns no CPU while it waits; the interrupter sleeps until the
// earliest deadline (or, with no deadline, until woken) and blocks every
// signal, so the process's own signals never reach it.
//
// How the application's signals are left alone:
//  * The signal is a real-time signal that nobody has a handler for: the
//    first wait scans SIGRTMAX down to SIGRTMIN and takes the first one whose
//    disposition is SIG_DFL, installing a handler that does nothing (without
//    SA_RESTART, so flock returns EINTR). If every real-time signal is taken,
//    timed and cancellable waits fail with ResourceExhausted.
//  * The signal is only ever sent to a thread that is listed as waiting, and
//    only while it is listed. A wait that was signalled makes one system call
//    after unlisting itself, so that a signal still pending reaches the no-op
//    handler there, never the code after the wait.
//  * The waiting thread unblocks the signal only for the wait and restores
//    its signal mask afterwards, so it works in programs that block all
//    signals (for example to read them through signalfd).
//
// The check-then-block race (the deadline passes, or Cancel() comes, between
// the last check and entering flock) is closed by signalling again every
// 1 ms until the wait ends.
//
// fork(): the child has no interrupter (threads are not inherited) and
// forgets the parent's waits; its first timed or cancellable wait starts
// its own. The interrupter's mutex is a leaf (nothing else is taken while it
// is held, and Wake() does not take it), so its fork handlers can lock it
// without ordering against other locks.
//
// Thread safety: an InterruptibleWait belongs to the thread that made it and
// must be destroyed on that thread; Wake() may be called from any thread.

#ifndef ONLYONE_LIB_INTERNAL_INTERRUPTIBLE_WAIT_H_
#define ONLYONE_LIB_INTERNAL_INTERRUPTIBLE_WAIT_H_

#include <signal.h>
#include <sys/types.h>

#include <atomic>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "onlyone/internal/cancellation_state.h"

namespace onlyone::internal {

// Returns CLOCK_MONOTONIC as an absl::Time; deadlines of waits are on this
// clock so that setting the wall clock neither shortens nor stretches them.
absl::Time MonotonicNow();

// Returns the real-time signal used to interrupt waits, choosing and
// installing it on first use; an error if none is free.
absl::StatusOr<int> InterruptSignal();

class InterruptibleWait final : public CancellationWaker {
 public:
  enum class Outcome { kKeepWaiting, kDeadlineExceeded, kCancelled };

  // Lists the calling thread with the interrupter, to be signalled at
  // `deadline` (on the MonotonicNow() clock; may be absl::InfiniteFuture())
  // or when `cancellation` (may be null) is cancelled. Returns Cancelled if
  // it already is, ResourceExhausted if no signal is free or the
  // interrupter's thread cannot be started.
  static absl::StatusOr<std::unique_ptr<InterruptibleWait>> Start(
      absl::Time deadline, CancellationState* cancellation);

  InterruptibleWait(const InterruptibleWait&) = delete;
  InterruptibleWait& operator=(const InterruptibleWait&) = delete;
  ~InterruptibleWait();

  // Called after a blocking call returned EINTR (or before blocking): tells
  // whether the wait is over and why. Other signals (the application's) give
  // kKeepWaiting and the caller blocks again.
  Outcome Check() const;

  // Cancel() has the interrupter signal the thread at once.
  void Wake() override;

 private:
  friend class Interrupter;

  InterruptibleWait(absl::Time deadline, CancellationState* cancellation,
                    int signal, sigset_t saved_mask);

  const absl::Time deadline_;
  CancellationState* const cancellation_;  // may be null
  const int signal_;
  const sigset_t saved_mask_;
  pid_t thread_id_ = 0;
  // Set by Wake(); read by the interrupter.
  std::atomic<bool> woken_{false};
  bool registered_ = false;  // with cancellation_
  bool listed_ = false;      // with the interrupter
  // The interrupter's, guarded by its mutex: the list of waits, when this
  // one is to be signalled next, and whether it ever was.
  InterruptibleWait* previous_ = nullptr;
  InterruptibleWait* next_ = nullptr;
  absl::Time next_signal_;
  bool signalled_ = false;
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
