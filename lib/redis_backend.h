// The Redis lock as a backend of the lock seam (lib/lock_backend.h): each
// Acquire() takes the RedisLock named by the resource on options.server,
// with options' lease, password and I/O timeout, and the AcquireOptions'
// timeout and cancellation (options.timeout and options.cancellation are
// not used). Fencing tokens; lost() is the lease's lost-lock signal; no
// shared mode (InvalidArgument). See lib/redis_lock.h for the contract.
//
// Example:
//   onlyone::RedisLockOptions redis;
//   redis.server = "unix:///run/redis/redis-server.sock";
//   std::unique_ptr<onlyone::LockBackend> fleet =
//       onlyone::NewRedisLockBackend(redis);
//   absl::Status done = onlyone::RunExclusive(
//       *fleet, "nightly-import", {}, [](const onlyone::CancellationToken& lost) {
//         return Import(/*stop=*/lost);
//       });
//
// Thread safety: as LockBackend's contract says.

#ifndef ONLYONE_LIB_REDIS_BACKEND_H_
#define ONLYONE_LIB_REDIS_BACKEND_H_

#include <memory>

#include "onlyone/lock_backend.h"
#include "onlyone/redis_lock.h"

namespace onlyone {

std::unique_ptr<LockBackend> NewRedisLockBackend(
    const RedisLockOptions& options = {});

}  // namespace onlyone

#endif  // ONLYONE_LIB_REDIS_BACKEND_H_
