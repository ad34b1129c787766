// LockBackend: the interface behind which a lock lives, so that the same
// code (RunExclusive, and later counting semaphores and fleet-wide leases)
// can run on the kernel file lock today and on other backends (a Redis lease
// with fencing tokens) later.
//
// Example:
//   std::unique_ptr<onlyone::LockBackend> files = onlyone::NewFileLockBackend();
//   absl::StatusOr<std::unique_ptr<onlyone::HeldLock>> lock =
//       files->Acquire("/run/lock/nightly.lock", {});
//   if (!lock.ok()) return lock.status();
//   ...
//   return (*lock)->Release();
//
// Contract for every backend:
//  * Acquire() honours LockOptions::mode, timeout (ZeroDuration tries once)
//    and cancellation, with the status codes documented in
//    lib/scoped_file_lock.h; options a backend cannot honour are
//    InvalidArgument, never silently ignored.
//  * A HeldLock releases on destruction; Release() reports errors and is
//    idempotent.
//  * Thread safety: Acquire() is thread-safe; a HeldLock is used from one
//    thread at a time.

#ifndef ONLYONE_LIB_LOCK_BACKEND_H_
#define ONLYONE_LIB_LOCK_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "lib/scoped_file_lock.h"

namespace onlyone {

// A lock held through a LockBackend.
class HeldLock {
 public:
  virtual ~HeldLock() = default;

  // Releases the lock; idempotent.
  [[nodiscard]] virtual absl::Status Release() = 0;

  // Whether the lock is still held by this object in this process.
  virtual bool held() const = 0;

  // Names the lock for messages, e.g. "/run/lock/nightly.lock".
  virtual std::string name() const = 0;
};

class LockBackend {
 public:
  virtual ~LockBackend() = default;

  // Takes the lock named `resource` (a path for the file backend).
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const LockOptions& options) = 0;
};

// The kernel file-lock backend: resources are lock file paths, held with
// ScopedFileLock.
std::unique_ptr<LockBackend> NewFileLockBackend();

}  // namespace onlyone

#endif  // ONLYONE_LIB_LOCK_BACKEND_H_
