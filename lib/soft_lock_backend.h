// The soft lock as a backend of the lock seam (lib/lock_backend.h): each
// Acquire() takes the SoftFileLock (lib/soft_file_lock.h) at the path that
// is the resource, with the timeout and cancellation of the AcquireOptions
// and the rest of `defaults` (stale_after, remote_poll_interval; its own
// timeout and cancellation are not used). No shared mode (InvalidArgument),
// no fencing tokens (0); lost() is cancelled when another process breaks
// the lock (seen at the next heartbeat at the latest).
//
// Example:
//   onlyone::SoftLockOptions defaults;
//   defaults.stale_after = absl::Seconds(60);
//   std::unique_ptr<onlyone::LockBackend> soft =
//       onlyone::NewSoftFileLockBackend(defaults);
//   auto lock = soft->Acquire("/mnt/share/nightly.lock", {});
//
// Thread safety: as LockBackend's contract says.

#ifndef ONLYONE_LIB_SOFT_LOCK_BACKEND_H_
#define ONLYONE_LIB_SOFT_LOCK_BACKEND_H_

#include <memory>

#include "onlyone/lock_backend.h"
#include "onlyone/soft_file_lock.h"

namespace onlyone {

std::unique_ptr<LockBackend> NewSoftFileLockBackend(
    const SoftLockOptions& defaults = {});

}  // namespace onlyone

#endif  // ONLYONE_LIB_SOFT_LOCK_BACKEND_H_
