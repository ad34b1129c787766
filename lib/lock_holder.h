// HolderInfo: who holds a lock that could not be taken, as the backend that
// refused found it, carried on the refusal's absl::Status so that nobody
// looks again.
//
// Example:
//   absl::StatusOr<std::unique_ptr<onlyone::HeldLock>> lock =
//       backend->Acquire(path, try_once);
//   if (std::optional<onlyone::HolderInfo> holder =
//           onlyone::HolderFromStatus(lock.status())) {
//     // held by someone: holder->holders lists whom the backend could see
//   }
//
// Contract:
//  * A status carries a HolderInfo exactly when it refuses because the lock
//    is held: a try that found it held (Unavailable), a wait that ran out
//    (DeadlineExceeded) or was cancelled (Cancelled), a nested acquisition
//    that would deadlock (FailedPrecondition), and SingleInstance's
//    refusals, a refused replacement (FailedPrecondition) included. Errors
//    of any other kind (an unsafe directory, a bad path) carry none, so
//    HolderFromStatus() tells a conflict from a failure whatever the code.
//  * The status's message already describes the holder; the payload is for
//    programs (the command's exit codes, --json).
//  * Thread safety: plain values; the functions are thread-safe.

#ifndef ONLYONE_LIB_LOCK_HOLDER_H_
#define ONLYONE_LIB_LOCK_HOLDER_H_

// HolderInfo, LockHolderProcess, HolderFromStatus() and AttachHolder().
#include "onlyone/internal/holder_info.h"

#endif  // ONLYONE_LIB_LOCK_HOLDER_H_
