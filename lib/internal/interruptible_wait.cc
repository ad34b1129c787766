#include "onlyone/internal/interruptible_wait.h"

#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/str_cat.h"
#include "onlyone/internal/posix_error.h"

namespace onlyone::internal {
namespace {

// Fires every millisecond after the deadline or a Cancel(), until the wait
// ends; see "check-then-block race" in the header.
constexpr long kRefireIntervalNanos = 1'000'000;

void IgnoreInterrupt(int) {}

thread_local bool cancellation_unreported = false;

// The calling thread's interrupt timer: created by its first timed or
// cancellable wait and kept until the thread ends, so that a wait neither
// creates nor deletes one, and ending a wait costs a disarm only if the
// timer was armed. Trivially destructible, so that the fork child handler
// may touch it without running TLS initialisation.
struct ThreadTimer {
  timer_t id;
  bool created;
  bool in_use;  // by a live InterruptibleWait of this thread
};
thread_local ThreadTimer thread_timer{};

// Deletes the thread's timer when the thread ends; odr-used when the timer
// is created, which registers the destructor.
struct ThreadTimerDeleter {
  ~ThreadTimerDeleter() {
    if (thread_timer.created) timer_delete(thread_timer.id);
    thread_timer.created = false;
  }
};
thread_local ThreadTimerDeleter thread_timer_deleter;

// POSIX timers are not inherited: the forking thread's timer id means
// nothing in the child (and may name one of the child's own later).
void ForgetThreadTimerInChild() {
  thread_timer.created = false;
  thread_timer.in_use = false;
}

absl::Status CreateTimer(int signal, timer_t* timer) {
  struct sigevent event {};
  event.sigev_notify = SIGEV_THREAD_ID;
  event.sigev_signo = signal;
  event._sigev_un._tid = gettid();
  if (timer_create(CLOCK_MONOTONIC, &event, timer) != 0) {
    return PosixError("creating the lock-wait timer", errno);
  }
  return absl::OkStatus();
}

struct ChosenSignal {
  int signal = 0;
  int error_number = 0;
};

ChosenSignal ChooseAndInstallSignal() {
  for (int candidate = SIGRTMAX; candidate >= SIGRTMIN; --candidate) {
    struct sigaction current {};
    if (sigaction(candidate, nullptr, &current) != 0) continue;
    const bool unused = !(current.sa_flags & SA_SIGINFO) &&
                        current.sa_handler == SIG_DFL;
    if (!unused) continue;
    struct sigaction ours {};
    ours.sa_handler = IgnoreInterrupt;
    sigemptyset(&ours.sa_mask);
    ours.sa_flags = 0;  // no SA_RESTART: flock(2) must return EINTR
    if (sigaction(candidate, &ours, nullptr) != 0) {
      return {0, errno};
    }
    return {candidate, 0};
  }
  return {0, EAGAIN};
}

}  // namespace

// Re-arms the wait's timer to fire at once, and every millisecond after
// until the wait ends (see "check-then-block race" in the header).
void InterruptibleWait::Wake() {
  woken_.store(true, std::memory_order_relaxed);
  struct itimerspec now {};
  now.it_value.tv_nsec = 1;
  now.it_interval.tv_nsec = kRefireIntervalNanos;
  timer_settime(timer_, 0, &now, nullptr);
}

absl::Time MonotonicNow() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return absl::TimeFromTimespec(now);
}

absl::StatusOr<int> InterruptSignal() {
  static absl::once_flag once;
  static ChosenSignal chosen;
  absl::call_once(once, [] { chosen = ChooseAndInstallSignal(); });
  if (chosen.signal != 0) return chosen.signal;
  if (chosen.error_number == EAGAIN) {
    return absl::ResourceExhaustedError(
        "every real-time signal already has a handler; onlyone needs one "
        "unused real-time signal to time out or cancel a lock wait");
  }
  return PosixError("installing the lock-wait interrupt handler",
                    chosen.error_number);
}

absl::StatusOr<std::unique_ptr<InterruptibleWait>> InterruptibleWait::Start(
    absl::Time deadline, CancellationState* cancellation) {
  if (cancellation != nullptr && cancellation->IsCancelled()) {
    return absl::CancelledError("cancelled before the wait started");
  }
  absl::StatusOr<int> signal = InterruptSignal();
  if (!signal.ok()) return signal.status();
  static absl::once_flag fork_handler_once;
  absl::call_once(fork_handler_once, [] {
    pthread_atfork(nullptr, nullptr, ForgetThreadTimerInChild);
  });

  sigset_t ours;
  sigemptyset(&ours);
  sigaddset(&ours, *signal);
  sigset_t saved_mask;
  pthread_sigmask(SIG_UNBLOCK, &ours, &saved_mask);
  // From here on the destructor restores the mask.
  std::unique_ptr<InterruptibleWait> wait(
      new InterruptibleWait(deadline, cancellation, *signal, saved_mask));

  ThreadTimer& mine = thread_timer;
  if (!mine.in_use) {
    if (!mine.created) {
      if (absl::Status created = CreateTimer(*signal, &mine.id);
          !created.ok()) {
        return created;
      }
      (void)&thread_timer_deleter;
      mine.created = true;
    }
    mine.in_use = true;
    wait->timer_ = mine.id;
    wait->uses_thread_timer_ = true;
  } else {
    // Not expected (one wait per thread at a time), but a second live
    // wait gets a timer of its own rather than sharing the thread's.
    if (absl::Status created = CreateTimer(*signal, &wait->timer_);
        !created.ok()) {
      return created;
    }
    wait->timer_created_ = true;
  }

  if (deadline != absl::InfiniteFuture()) {
    struct itimerspec at_deadline {};
    at_deadline.it_value = absl::ToTimespec(deadline);
    // A zero it_value would disarm the timer; a deadline already past fires
    // at once instead.
    if (at_deadline.it_value.tv_sec <= 0 && at_deadline.it_value.tv_nsec <= 0) {
      at_deadline.it_value.tv_nsec = 1;
    }
    at_deadline.it_interval.tv_nsec = kRefireIntervalNanos;
    wait->armed_ = true;  // before it can fail: the destructor disarms
    if (timer_settime(wait->timer_, TIMER_ABSTIME, &at_deadline, nullptr) !=
        0) {
      return PosixError("arming the lock-wait timer", errno);
    }
  }
  if (cancellation != nullptr) {
    if (!cancellation->Register(wait.get())) {
      return absl::CancelledError("cancelled before the wait started");
    }
    wait->registered_ = true;
  }
  return wait;
}

InterruptibleWait::InterruptibleWait(absl::Time deadline,
                                     CancellationState* cancellation,
                                     int signal, sigset_t saved_mask)
    : deadline_(deadline),
      cancellation_(cancellation),
      signal_(signal),
      saved_mask_(saved_mask) {}

InterruptibleWait::~InterruptibleWait() {
  // Unregister first so that a concurrent Cancel() cannot arm the timer
  // after this. A signal the timer already sent is pending for this thread,
  // which has it unblocked: it reaches the no-op handler when the disarm
  // returns (or is discarded by timer_delete), never code after the wait.
  if (registered_) cancellation_->Unregister(this);
  if (uses_thread_timer_) {
    if (armed_ || woken_.load(std::memory_order_relaxed)) {
      const struct itimerspec disarmed {};
      timer_settime(timer_, 0, &disarmed, nullptr);
    }
    thread_timer.in_use = false;
  } else if (timer_created_) {
    timer_delete(timer_);
  }
  // Start() only unblocked our signal; nothing to undo unless it was blocked.
  if (sigismember(&saved_mask_, signal_)) {
    pthread_sigmask(SIG_SETMASK, &saved_mask_, nullptr);
  }
}

InterruptibleWait::Outcome InterruptibleWait::Check() const {
  if (cancellation_ != nullptr && cancellation_->IsCancelled()) {
    return Outcome::kCancelled;
  }
  if (MonotonicNow() >= deadline_) return Outcome::kDeadlineExceeded;
  return Outcome::kKeepWaiting;
}

UnreportedCancellationScope::UnreportedCancellationScope() {
  cancellation_unreported = true;
}

UnreportedCancellationScope::~UnreportedCancellationScope() {
  cancellation_unreported = false;
}

bool CancellationUnreported() { return cancellation_unreported; }

}  // namespace onlyone::internal
