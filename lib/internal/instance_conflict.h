// SingleInstance's conflict policies: what Acquire() does when another copy
// holds the lock (refuse, wait, or replace the verified holder), and the
// look for a copy that an earlier onlyone build started. The policies never
// take a lock themselves: the caller passes a LockAttempt that takes it
// through its backend (lib/lock_backend.h), so a new backend changes
// nothing here.
//
// Example:
//   std::unique_ptr<HeldLock> lock;
//   auto attempt = [&](absl::Duration timeout) -> absl::Status {
//     ...  // backend->Acquire(path, options with `timeout`) into `lock`
//   };
//   absl::Status taken = LockReplacing(target, attempt, absl::Seconds(5));
//
// Contract:
//  * Every refusal because the lock is held (Unavailable, DeadlineExceeded,
//    and FailedPrecondition when replacing is refused) describes the holder
//    in its message and carries it as a HolderInfo payload
//    (lib/lock_holder.h). Other errors come from the attempt unchanged.
//  * The holder is inspected once per refusal, reusing what the attempt's
//    refusal already carries (lib/internal/holder_inspection.h).
//  * Blocking: LockFailingAtOnce() never waits; LockWaiting() up to its
//    timeout; LockReplacing() up to the grace period twice plus the SIGKILL
//    wait. Only a process an owner record names, verified, is signalled,
//    through a pidfd.
//
// Thread safety: the functions are thread-safe; the attempt is called on
// the calling thread.

#ifndef ONLYONE_LIB_INTERNAL_INSTANCE_CONFLICT_H_
#define ONLYONE_LIB_INTERNAL_INSTANCE_CONFLICT_H_

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "onlyone/internal/instance_info.h"

namespace onlyone::internal {

// The lock the policies are about, as messages name it.
struct ConflictTarget {
  std::string display_name;  // the instance name, or the lock path
  std::string lock_path;
  // AcquireAtPath(): messages say "PATH is held", not "NAME is running".
  bool is_path = false;
};

// One attempt at the lock: OK when it was taken (the caller keeps it),
// otherwise the backend's refusal or error. ZeroDuration() tries once.
using LockAttempt = absl::FunctionRef<absl::Status(absl::Duration timeout)>;

// The one-line description of a holder, for a name or a path.
std::string Describe(const ConflictTarget& target, const InstanceInfo& holder);

// ConflictPolicy::kFail: Unavailable naming the holder.
[[nodiscard]] absl::Status LockFailingAtOnce(const ConflictTarget& target,
                                             LockAttempt attempt);

// ConflictPolicy::kWait: DeadlineExceeded naming the holder after `timeout`.
[[nodiscard]] absl::Status LockWaiting(const ConflictTarget& target,
                                       LockAttempt attempt,
                                       absl::Duration timeout);

// ConflictPolicy::kReplace: SIGTERM to the verified holder, SIGKILL after
// `grace_period`; FailedPrecondition when it cannot be verified or may not
// be signalled.
[[nodiscard]] absl::Status LockReplacing(const ConflictTarget& target,
                                         LockAttempt attempt,
                                         absl::Duration grace_period);

// Waits for the lock at `path` (a legacy location) up to `timeout`: OK once
// taken and let go again, DeadlineExceeded when it is still held.
using LegacyWait = absl::FunctionRef<absl::Status(const std::string& path,
                                                  absl::Duration timeout)>;

// Looks for a copy that an earlier onlyone build started, holding the same
// lock at one of `legacy_paths`: OK when none does, or (with `wait`) once
// it has exited, by `deadline`; otherwise Unavailable, or DeadlineExceeded
// saying it waited `wait_timeout`. Called while holding our own lock, only
// while our lock file holds no owner record yet: see "Where the locks live"
// in docs/design.md for why that suffices.
[[nodiscard]] absl::Status CheckLegacyLocks(
    const ConflictTarget& target, const std::vector<std::string>& legacy_paths,
    bool wait, absl::Duration wait_timeout, absl::Time deadline,
    LegacyWait wait_for);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_INSTANCE_CONFLICT_H_
