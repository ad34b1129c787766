// LockBackend: the one seam behind which every kind of lock lives (the
// kernel file lock today; a counting semaphore, a lock for filesystems where
// flock(2) cannot be trusted and a fleet-wide lease on Redis next), so that
// RunExclusive, Exclusive and the onlyone command work on any of them.
//
// Example:
//   std::unique_ptr<onlyone::LockBackend> files = onlyone::NewFileLockBackend();
//   onlyone::AcquireOptions options;
//   options.timeout = absl::Seconds(30);
//   absl::StatusOr<std::unique_ptr<onlyone::HeldLock>> lock =
//       files->Acquire("/run/lock/nightly.lock", options);
//   if (!lock.ok()) return lock.status();  // names the lock and its holder
//   Work((*lock)->lost());  // a token cancelled if the lock is lost
//   return (*lock)->Release();
//
// The contract every backend keeps (tests/backend_conformance.h checks it;
// a new backend adds itself there):
//  * Acquire(resource, options) takes the lock named `resource` (a path for
//    the file backend, a name for a fleet lock):
//      - options.timeout ZeroDuration() tries once: Unavailable when held
//        elsewhere, the message naming the resource and, where the backend
//        can tell, the holder; where it can, a refusal because the lock
//        is held also carries what the backend found out about the holder
//        as a HolderInfo (lib/lock_holder.h), so that callers never look
//        again (the file backend does);
//      - a finite timeout waits at most that long and then returns
//        DeadlineExceeded, never sooner; InfiniteDuration() waits until
//        the lock is free;
//      - options.cancellation: Cancel() from another thread makes a waiting
//        Acquire() return Cancelled promptly;
//      - waiting never polls: a waiter uses no CPU and makes no requests
//        while nothing changes, and is woken when the lock is freed (the
//        one exception by nature: the soft lock waiting for a holder on
//        another host, of whose changes no kernel tells this one, looks
//        again with backoff; see lib/soft_file_lock.h);
//      - options.mode kShared on a backend without shared holders is
//        InvalidArgument; so is a malformed resource.
//  * A HeldLock:
//      - is released on destruction; Release() reports errors and is
//        idempotent (later calls return OK);
//      - held() is true until Release(), false in a fork()ed child's copy,
//        and false once a lease-based lock is lost or may have expired;
//      - fencing_token() strictly increases per resource across all holders,
//        for backends that have one (give it to the resource you protect,
//        which refuses older tokens); 0 for backends that do not;
//      - lost() is a token that is cancelled when the lock is lost (a lease
//        not renewed in time, a lock broken by another host), so work can
//        take it as its cancellation; a kernel lock is never lost while
//        held, and its token is never cancelled.
//  * Crashes: a holder that dies (SIGKILL included) frees the lock: at once
//    for kernel locks, when its lease ends for lease-based ones.
//  * fork(): a child's copy of a HeldLock is not held, and its Release() or
//    destructor never releases the parent's lock.
//  * exec(): a lock is not inherited by exec'd programs unless the backend's
//    own options say so (FileLockOptions::inheritable).
//  * Thread safety: Acquire() may be called from any number of threads; one
//    HeldLock is used from one thread at a time; lost() from any thread.
//  * Lifetime: destroy a HeldLock before the backend that gave it (a
//    backend may keep what its locks use, such as a server connection).
//
// Adding a backend: a file pair lib/NAME_backend.{h,cc} with a factory
// returning std::unique_ptr<LockBackend>, its cc_library in lib/BUILD (and a
// dependency of //lib:onlyone), and an instantiation of the conformance
// suite in tests/ (see docs/design.md, "Adding a backend").

#ifndef ONLYONE_LIB_LOCK_BACKEND_H_
#define ONLYONE_LIB_LOCK_BACKEND_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "onlyone/cancellation.h"
#include "onlyone/lock_holder.h"
#include "onlyone/lock_options.h"
#include "onlyone/scoped_file_lock.h"

namespace onlyone {

// A lock held through a LockBackend.
class HeldLock {
 public:
  virtual ~HeldLock() = default;

  // Releases the lock; idempotent.
  [[nodiscard]] virtual absl::Status Release() = 0;

  // Whether this object holds the lock for this process (see the contract).
  virtual bool held() const = 0;

  // Names the lock for messages, e.g. "/run/lock/nightly.lock".
  virtual std::string name() const = 0;

  // Strictly increasing per resource where the backend has fencing tokens;
  // 0 where it does not.
  virtual uint64_t fencing_token() const = 0;

  // Cancelled when the lock is lost while this object holds it.
  virtual CancellationToken lost() const = 0;

  // The kernel file lock underneath, for what only a file lock offers: its
  // descriptor (SingleInstance writes the owner record through it),
  // HandOffOnFork() and InheritedLocksEnvValue(). nullptr for backends that
  // are not one file lock. Owned by this HeldLock.
  virtual ScopedFileLock* file_lock() { return nullptr; }
  // For a lock taken to be kept by exec'd programs (the backend's options
  // say so, e.g. FileLockOptions::inheritable): the value to set
  // kInheritedLocksEnvVar to in their environment, so that they can adopt
  // it. "" for a lock that no exec'd program keeps.
  virtual std::string InheritedLocksEnvValue() const { return ""; }
};

class LockBackend {
 public:
  virtual ~LockBackend() = default;

  // Takes the lock named `resource`; see the contract above.
  [[nodiscard]] virtual absl::StatusOr<std::unique_ptr<HeldLock>> Acquire(
      absl::string_view resource, const AcquireOptions& options) = 0;
};

// The kernel file-lock backend: resources are lock file paths, held with
// ScopedFileLock and `file_options`. No fencing tokens (0); never lost;
// file_lock() is the ScopedFileLock.
std::unique_ptr<LockBackend> NewFileLockBackend(
    const FileLockOptions& file_options = {});

}  // namespace onlyone

#endif  // ONLYONE_LIB_LOCK_BACKEND_H_
