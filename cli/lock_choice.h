// Which lock an onlyone command takes, and through which backend of the lock
// seam (lib/lock_backend.h): the one place where the flags pick a backend.
//
// Example:
//   absl::StatusOr<LockChoice> choice = ChooseLock(target, instance_options);
//   if (!choice.ok()) return choice.status();
//   AcquireOptions once;
//   once.timeout = absl::ZeroDuration();
//   auto held = choice->backend->Acquire(choice->resource, once);
//
// The kinds, by flag:
//  * the instance lock (no --slots): a flock(2) lock on NAME's lock file, or
//    on --lock PATH, taken by SingleInstance, which writes the owner record
//    and applies the conflict policy;
//  * --slots N: one of N permits of the counting semaphore
//    (lib/scoped_semaphore.h) whose path is NAME's lock file without ".lock"
//    (InstanceSemaphorePath()) or --lock PATH;
//  * --soft (with --lock PATH only): a SoftFileLock (lib/soft_file_lock.h)
//    at PATH, for filesystems where flock(2) cannot be trusted. It can be
//    lost (broken by another host), so `run` supervises COMMAND.
//  * --redis URL: the Redis lease NAME on that server (lib/redis_lock.h),
//    for every host that uses the server; it can be lost.
// A new backend (a soft lock, a Redis lease) is one more LockKind here, its
// case in each function of lock_choice.cc, and its flag in cli.cc.
//
// Thread safety: the functions are thread-safe; a backend is used as
// LockBackend's contract says.

#ifndef ONLYONE_CLI_LOCK_CHOICE_H_
#define ONLYONE_CLI_LOCK_CHOICE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "onlyone/lock_backend.h"
#include "onlyone/redis_lock.h"
#include "onlyone/single_instance.h"
#include "onlyone/soft_file_lock.h"

namespace onlyone::cli {

// Which lock a command is about: a NAME in a scope, or a lock file PATH.
// Exactly one of name and lock_path is set.
struct LockTarget {
  std::string name;
  std::string lock_path;
  Scope scope = Scope::kUser;
  // --slots N: one of N permits of a counting semaphore; 0: the instance
  // lock.
  int slots = 0;
  // --soft: the soft lock at lock_path, with --stale-after.
  bool soft = false;
  absl::Duration stale_after = absl::Seconds(30);
  // --redis URL: the Redis lease `name` on that server instead of a local
  // lock ("": a local lock), with --lease and --redis-password-file.
  std::string redis_server;
  absl::Duration redis_lease = absl::Seconds(30);
  std::string redis_password_file;
};

enum class LockKind { kInstance, kSemaphore, kSoft, kRedis };

// The kind the flags ask for.
LockKind KindOf(const LockTarget& target);

struct LockChoice {
  std::unique_ptr<LockBackend> backend;
  // What to give backend->Acquire(): the name or lock file (kInstance), the
  // semaphore's path (kSemaphore).
  std::string resource;
  // Whether a lock of this backend can be lost while held (a lease): then
  // `onlyone run` stays as COMMAND's supervisor, to stop it when lost()
  // fires. Such a lock lives in onlyone's process (no descriptor of
  // COMMAND's can keep it), so onlyone also releases it when COMMAND ends.
  // kSoft and kRedis can be.
  bool can_be_lost = false;
};

// For `onlyone run`: the lock to hold while COMMAND runs. `instance` says
// how: scope, conflict policy (kWait's limit is AcquireOptions::timeout; a
// timeout of zero tries once), grace period, recorded command and
// executable, inheritable, shared. Fails with the library's error when the
// placement does (an unsafe directory).
absl::StatusOr<LockChoice> ChooseLock(const LockTarget& target,
                                      const InstanceOptions& instance);

// For `onlyone wait`: a plain lock on `resource` (the lock file a holder
// holds, or the semaphore's path), taken and released at once to learn
// that it is free; no owner record.
std::unique_ptr<LockBackend> ProbeBackend(const LockTarget& target);

// The server, lease and password file of a kRedis target.
RedisLockOptions RedisOptionsOf(const LockTarget& target);

// The semaphore's path for a kSemaphore target (creating no file, but the
// user's or session's private directory if missing).
absl::StatusOr<std::string> SemaphorePathOf(const LockTarget& target);

// The soft lock's options for a kSoft target: its --stale-after (the
// timeout comes from AcquireOptions).
SoftLockOptions SoftOptionsOf(const LockTarget& target);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_LOCK_CHOICE_H_
