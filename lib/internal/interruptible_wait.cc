#include "onlyone/internal/interruptible_wait.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "onlyone/internal/fork_safe_mutex.h"
#include "onlyone/internal/posix_error.h"

namespace onlyone::internal {
namespace {

// After the deadline or a Cancel(), the thread is signalled again every
// millisecond until the wait ends; see "check-then-block race" in the header.
constexpr absl::Duration kResignalInterval = absl::Milliseconds(1);

void IgnoreInterrupt(int) {}

thread_local bool cancellation_unreported = false;

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

// The process's interrupter: the waits listed with it, and the thread that
// signals them. Built on first use and never destroyed, so that a wait in a
// static destructor still finds it.
class Interrupter {
 public:
  static Interrupter& Get() {
    static Interrupter* const interrupter = new Interrupter;
    return *interrupter;
  }

  // Lists `wait`, starting the thread if this process has none yet.
  absl::Status List(InterruptibleWait* wait) {
    bool poke = false;
    {
      ForkSafeLock lock(&mutex_);
      if (!running_) {
        if (absl::Status started = StartThread(); !started.ok()) {
          return started;
        }
      }
      wait->next_signal_ = wait->deadline_;
      wait->previous_ = nullptr;
      wait->next_ = waits_;
      if (waits_ != nullptr) waits_->previous_ = wait;
      waits_ = wait;
      wait->listed_ = true;
      // The thread sleeps until `sleeping_until_`: wake it only if this
      // wait must be signalled earlier.
      poke = wait->deadline_ < sleeping_until_;
    }
    if (poke) Poke();
    return absl::OkStatus();
  }

  // Unlists `wait`; returns whether it was ever signalled.
  bool Unlist(InterruptibleWait* wait) {
    ForkSafeLock lock(&mutex_);
    if (wait->previous_ != nullptr) {
      wait->previous_->next_ = wait->next_;
    } else {
      waits_ = wait->next_;
    }
    if (wait->next_ != nullptr) wait->next_->previous_ = wait->previous_;
    wait->listed_ = false;
    return wait->signalled_;
  }

  // Makes the thread look at its waits now. Async-signal-safe, takes no
  // lock: Wake() calls it under a cancellation state's mutex.
  void Poke() {
    const int fd = wake_fd_.load(std::memory_order_acquire);
    if (fd < 0) return;
    const uint64_t one = 1;
    // A full counter (2^64 - 2 pokes unread) still wakes the thread.
    (void)!write(fd, &one, sizeof one);
  }

 private:
  Interrupter() {
    pthread_atfork(LockBeforeFork, UnlockInParent, ForgetParentInChild);
  }

  static void LockBeforeFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Get().mutex_.Lock();
  }
  static void UnlockInParent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Get().mutex_.Unlock();
  }

  // Runs in the single-threaded child: only async-signal-safe calls. The
  // parent's thread and waits do not exist here; the eventfd is the
  // parent's, so writing it would wake the parent's thread.
  static void ForgetParentInChild() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Interrupter& self = Get();
    self.waits_ = nullptr;
    self.running_ = false;
    self.sleeping_until_ = absl::InfinitePast();
    const int fd = self.wake_fd_.exchange(-1, std::memory_order_relaxed);
    if (fd >= 0) close(fd);
    self.mutex_.Unlock();
  }

  absl::Status StartThread() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
      return PosixError("creating the lock-wait interrupter's eventfd", errno);
    }
    // The thread blocks every signal (it inherits the mask), so that the
    // process's signals go to the application's threads.
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_t thread;
    const int error_number = pthread_create(
        &thread, &attributes,
        [](void*) -> void* {
          Get().Run();
          return nullptr;
        },
        nullptr);
    pthread_attr_destroy(&attributes);
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    if (error_number != 0) {
      close(fd);
      return PosixError("starting the lock-wait interrupter thread",
                        error_number);
    }
    pthread_setname_np(thread, "onlyone-wait");
    process_id_ = getpid();
    wake_fd_.store(fd, std::memory_order_release);
    running_ = true;
    return absl::OkStatus();
  }

  // Signals every wait that is due, then sleeps until the next one is (or
  // until poked).
  [[noreturn]] void Run() {
    for (;;) {
      absl::Time wake_at = absl::InfiniteFuture();
      int fd;
      {
        ForkSafeLock lock(&mutex_);
        const absl::Time now = MonotonicNow();
        for (InterruptibleWait* wait = waits_; wait != nullptr;
             wait = wait->next_) {
          if (wait->woken_.load(std::memory_order_relaxed) &&
              !wait->signalled_) {
            wait->next_signal_ = now;
          }
          if (wait->next_signal_ <= now) {
            syscall(SYS_tgkill, process_id_, wait->thread_id_, wait->signal_);
            wait->signalled_ = true;
            wait->next_signal_ = now + kResignalInterval;
          }
          wake_at = std::min(wake_at, wait->next_signal_);
        }
        sleeping_until_ = wake_at;
        fd = wake_fd_.load(std::memory_order_relaxed);
      }
      struct pollfd poked = {fd, POLLIN, 0};
      struct timespec timeout;
      if (wake_at != absl::InfiniteFuture()) {
        timeout = absl::ToTimespec(
            std::max(wake_at - MonotonicNow(), absl::ZeroDuration()));
      }
      if (ppoll(&poked, 1, wake_at == absl::InfiniteFuture() ? nullptr : &timeout,
                nullptr) > 0) {
        uint64_t pokes;
        (void)!read(fd, &pokes, sizeof pokes);
      }
    }
  }

  ForkSafeMutex mutex_;
  InterruptibleWait* waits_ ABSL_GUARDED_BY(mutex_) = nullptr;
  bool running_ ABSL_GUARDED_BY(mutex_) = false;
  // When the thread will next look at its waits unless poked.
  absl::Time sleeping_until_ ABSL_GUARDED_BY(mutex_) = absl::InfinitePast();
  pid_t process_id_ ABSL_GUARDED_BY(mutex_) = 0;
  std::atomic<int> wake_fd_{-1};
};

void InterruptibleWait::Wake() {
  woken_.store(true, std::memory_order_relaxed);
  Interrupter::Get().Poke();
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

  sigset_t ours;
  sigemptyset(&ours);
  sigaddset(&ours, *signal);
  sigset_t saved_mask;
  pthread_sigmask(SIG_UNBLOCK, &ours, &saved_mask);
  // From here on the destructor restores the mask.
  std::unique_ptr<InterruptibleWait> wait(
      new InterruptibleWait(deadline, cancellation, *signal, saved_mask));
  wait->thread_id_ = gettid();
  if (absl::Status listed = Interrupter::Get().List(wait.get());
      !listed.ok()) {
    return listed;
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
  // Unregistered first, so that a concurrent Cancel() no longer pokes for
  // this wait, then unlisted, so that it is signalled no more.
  if (registered_) cancellation_->Unregister(this);
  if (listed_ && Interrupter::Get().Unlist(this)) {
    // A signal sent just before the unlisting may still be pending: any
    // system call's return hands it to the no-op handler here, while the
    // signal is still unblocked, rather than to the caller's code.
    sigset_t pending;
    sigpending(&pending);
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
