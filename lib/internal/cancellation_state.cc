#include "onlyone/internal/cancellation_state.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "absl/base/call_once.h"
#include "onlyone/internal/posix_error.h"

namespace onlyone::internal {
namespace {

// Every live CancellationState, for the fork handlers.
struct CancellationRegistry {
  ForkSafeMutex mutex;
  absl::flat_hash_set<CancellationState*> states ABSL_GUARDED_BY(mutex);
};

// Leaked, so that states destroyed by static destructors can still leave it.
CancellationRegistry& Registry() {
  static CancellationRegistry* const registry = new CancellationRegistry;
  return *registry;
}

// The registry's mutex, then each state's (the lock order): a state is
// never destroyed, nor a new one added, while its mutex is held here.
void LockStatesBeforeFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  CancellationRegistry& registry = Registry();
  registry.mutex.Lock();
  for (CancellationState* state : registry.states) state->LockForFork();
}

void UnlockStatesInParent() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  CancellationRegistry& registry = Registry();
  for (CancellationState* state : registry.states) state->UnlockInParent();
  registry.mutex.Unlock();
}

// Runs in the single-threaded child: only async-signal-safe calls.
void UnlockStatesInChild() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  CancellationRegistry& registry = Registry();
  for (CancellationState* state : registry.states) state->UnlockInChild();
  registry.mutex.Unlock();
}

}  // namespace

CancellationState::CancellationState() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    pthread_atfork(LockStatesBeforeFork, UnlockStatesInParent,
                   UnlockStatesInChild);
  });
  CancellationRegistry& registry = Registry();
  ForkSafeLock lock(&registry.mutex);
  registry.states.insert(this);
}

CancellationState::~CancellationState() {
  CancellationRegistry& registry = Registry();
  ForkSafeLock lock(&registry.mutex);
  registry.states.erase(this);
}

void CancellationState::LockForFork() { mu_.Lock(); }

void CancellationState::UnlockInParent() { mu_.Unlock(); }

void CancellationState::UnlockInChild() {
  wakers_from_parent_ = true;
  mu_.Unlock();
}

void CancellationState::DropWakersFromParent() {
  if (!wakers_from_parent_) return;
  wakers_.clear();
  wakers_from_parent_ = false;
}

void CancellationState::Cancel() {
  ForkSafeLock lock(&mu_);
  DropWakersFromParent();
  if (cancelled_) return;
  cancelled_ = true;
  for (CancellationWaker* waker : wakers_) waker->Wake();
}

bool CancellationState::IsCancelled() const {
  ForkSafeLock lock(&mu_);
  return cancelled_;
}

bool CancellationState::Register(CancellationWaker* waker) {
  ForkSafeLock lock(&mu_);
  DropWakersFromParent();
  if (cancelled_) return false;
  wakers_.insert(waker);
  return true;
}

void CancellationState::Unregister(CancellationWaker* waker) {
  ForkSafeLock lock(&mu_);
  DropWakersFromParent();
  wakers_.erase(waker);
}

absl::StatusOr<std::unique_ptr<CancellationEventFd>>
CancellationEventFd::Create(CancellationState& state) {
  const int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return PosixError("creating the cancellation eventfd", errno);
  std::unique_ptr<CancellationEventFd> waker(
      new CancellationEventFd(state, fd));
  if (!state.Register(waker.get())) {
    return absl::CancelledError("cancelled before the wait started");
  }
  waker->registered_ = true;
  return waker;
}

CancellationEventFd::CancellationEventFd(CancellationState& state, int fd)
    : state_(state), fd_(fd) {}

CancellationEventFd::~CancellationEventFd() {
  if (registered_) state_.Unregister(this);
  close(fd_);
}

void CancellationEventFd::Wake() {
  // Cannot fail but by overflow, which one write per Cancel() never reaches.
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t wrote = write(fd_, &one, sizeof one);
}

}  // namespace onlyone::internal
