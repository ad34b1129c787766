// A CancellationToken lets one thread stop another thread's lock wait.
//
// Thread safety: every member may be called from any thread at any time.
// Cancel() never blocks on a waiter; a waiter blocked in the kernel wakes
// within microseconds and its Acquire() returns absl::StatusCode::kCancelled.
// A fork()ed child may use, cancel and destroy the tokens it inherited,
// whatever other threads were doing with them at the fork; the child's
// copies are its own (cancelling one there leaves the parent's waits alone).
//
// Example:
//   onlyone::CancellationToken stop;
//   std::thread worker([&] {
//     onlyone::LockOptions options;
//     options.cancellation = stop;
//     auto lock = onlyone::ScopedFileLock::Acquire("/tmp/job.lock", options);
//     if (absl::IsCancelled(lock.status())) return;  // shutting down
//     ...
//   });
//   stop.Cancel();  // e.g. from a shutdown handler thread
//
// Copies share one state: cancelling any copy cancels them all. A token
// cannot be reset; make a new one for the next round of work.

#ifndef ONLYONE_LIB_CANCELLATION_H_
#define ONLYONE_LIB_CANCELLATION_H_

#include <memory>

namespace onlyone {

namespace internal {
class CancellationState;
}  // namespace internal

class CancellationToken {
 public:
  // Makes a token that is not cancelled.
  CancellationToken();

  // Cancels every wait that uses this token, now and in the future.
  void Cancel();

  // Reports whether Cancel() has been called on this token or a copy.
  bool IsCancelled() const;

  // The lock code registers its waits here; not for applications.
  internal::CancellationState& state() const { return *state_; }

 private:
  std::shared_ptr<internal::CancellationState> state_;
};

}  // namespace onlyone

#endif  // ONLYONE_LIB_CANCELLATION_H_
