#include "onlyone/internal/instance_conflict.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "onlyone/internal/holder_info.h"
#include "onlyone/internal/holder_inspection.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/instance_record.h"
#include "onlyone/internal/printable.h"

namespace onlyone::internal {
namespace {

// A conflict is re-examined this many times when the holder vanishes between
// the failed try and the look at who holds it.
constexpr int kConflictAttempts = 3;
// How long kReplace waits for the holder to die after SIGKILL (it can only
// take longer in uninterruptible sleep).
constexpr absl::Duration kKillWait = absl::Seconds(5);

// A refusal because `holder` holds the lock, carrying it.
absl::Status Refusal(absl::StatusCode code, absl::string_view message,
                     const InstanceInfo& holder) {
  absl::Status refusal(code, message);
  AttachHolder(refusal, HolderInfoOf(holder));
  return refusal;
}

// Who holds the lock that `refused` (an attempt's refusal) found held, from
// one look that reuses what the refusal carries: nullopt when it was
// released meanwhile; the look's error when the file cannot be looked at.
// `looked`, when not null, receives the inspection.
absl::StatusOr<std::optional<InstanceInfo>> HolderAfter(
    const ConflictTarget& target, const absl::Status& refused,
    Inspection* looked = nullptr) {
  const std::optional<HolderInfo> known = HolderFromStatus(refused);
  absl::StatusOr<Inspection> inspection =
      InspectLockFile(target.lock_path, known.has_value() ? &*known : nullptr);
  if (!inspection.ok()) return inspection.status();
  std::optional<InstanceInfo> holder = HolderFrom(*inspection);
  if (looked != nullptr) *looked = *std::move(inspection);
  return holder;
}

// The refusal after kConflictAttempts holders came and went.
absl::Status KeepsChanging(const ConflictTarget& target) {
  absl::Status refusal = absl::UnavailableError(absl::StrCat(
      target.display_name, " is already running (", target.lock_path,
      " is held, by a process that keeps changing)"));
  HolderInfo holder;
  holder.resource = target.lock_path;
  AttachHolder(refusal, holder);
  return refusal;
}

// LockWaiting(), also telling who held the lock when the wait ran out.
absl::Status WaitFor(const ConflictTarget& target, LockAttempt attempt,
                     absl::Duration timeout,
                     std::optional<InstanceInfo>* holder) {
  absl::Status waited = attempt(timeout);
  if (!absl::IsDeadlineExceeded(waited)) return waited;
  absl::StatusOr<std::optional<InstanceInfo>> held_by =
      HolderAfter(target, waited);
  if (!held_by.ok() || !held_by->has_value()) return waited;
  *holder = *std::move(held_by);
  return Refusal(
      absl::StatusCode::kDeadlineExceeded,
      absl::StrCat(Describe(target, **holder), "; gave up after waiting ",
                   absl::FormatDuration(timeout), " for it to exit"),
      **holder);
}

// Why the holder may not be replaced, "" when it may: only a process proven
// to be the holder is ever signalled.
std::string WhyNotReplaceable(const Inspection& inspection,
                              const InstanceInfo& holder) {
  if (!inspection.record.has_value()) {
    if (holder.inherited_from_pid != 0) {
      return absl::StrCat(
          "the processes that hold it inherited it from pid ",
          holder.inherited_from_pid,
          ", and only a process that an owner record names is signalled");
    }
    return inspection.record_rejected.empty()
               ? "it wrote no owner record, so it cannot be verified"
               : absl::StrCat(inspection.record_rejected,
                              ", so it cannot be verified");
  }
  const OwnerRecord& record = *inspection.record;
  if (!inspection.holders_known) {
    return "/proc/locks is not readable, so the kernel cannot confirm that "
           "the recorded process holds the lock";
  }
  if (!KernelLists(inspection, record.pid)) {
    return absl::StrCat("the kernel lists pid ", KernelPidList(inspection),
                        " as holding the lock, not recorded pid ", record.pid,
                        " (the lock was handed to it across a fork)");
  }
  if (record.hostname != CachedSelfIdentity().record.hostname) {
    return absl::StrCat("it was recorded on host ", Printable(record.hostname));
  }
  if (record.pid == getpid()) return "it is this process";
  return "";
}

// Signals the verified holder through a pidfd, so that a pid reused after
// the check can never receive the signal. Returns OK once it has exited.
absl::Status TerminateHolder(const ConflictTarget& target,
                             const InstanceInfo& holder,
                             absl::Duration grace_period) {
  const std::string refused_prefix =
      absl::StrCat(Describe(target, holder), "; not replacing it: ");
  absl::StatusOr<int> pidfd = OpenPidfd(holder.pid);
  if (absl::IsNotFound(pidfd.status())) return absl::OkStatus();  // gone
  if (!pidfd.ok()) {
    return Refusal(absl::StatusCode::kFailedPrecondition,
                   absl::StrCat(refused_prefix, pidfd.status().message()),
                   holder);
  }
  absl::Cleanup close_pidfd = [fd = *pidfd] { close(fd); };
  // The pidfd now pins one process; it is the verified one only if the start
  // time still matches.
  if (ProcessStartTicks(holder.pid) != holder.start_ticks) {
    return absl::OkStatus();  // exited between the check and pidfd_open
  }
  if (absl::Status allowed = SignalPidfd(*pidfd, holder.pid, 0);
      !allowed.ok()) {
    if (absl::IsNotFound(allowed)) return absl::OkStatus();
    return Refusal(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat(refused_prefix, "not allowed to signal pid ", holder.pid,
                     " (uid ", holder.uid, "): ", allowed.message()),
        holder);
  }
  if (absl::Status sent = SignalPidfd(*pidfd, holder.pid, SIGTERM);
      !sent.ok() && !absl::IsNotFound(sent)) {
    return sent;
  }
  if (WaitForExit(*pidfd, grace_period)) return absl::OkStatus();
  if (absl::Status sent = SignalPidfd(*pidfd, holder.pid, SIGKILL);
      !sent.ok() && !absl::IsNotFound(sent)) {
    return sent;
  }
  if (WaitForExit(*pidfd, kKillWait)) return absl::OkStatus();
  return Refusal(absl::StatusCode::kDeadlineExceeded,
                 absl::StrCat(target.display_name, ": pid ", holder.pid,
                              " did not exit within ",
                              absl::FormatDuration(kKillWait), " of SIGKILL"),
                 holder);
}

// The refusal when the replaced holder has exited but the lock is still
// held a grace period later (`status` says so, and `holder` holds it now,
// when known): by processes it left running (which are not signalled: only
// the process an owner record names is), or by another copy that came
// first. One sentence, describing who holds it now.
absl::Status ReplacedButHeld(const ConflictTarget& target,
                             const InstanceInfo& replaced,
                             const absl::Status& status,
                             const std::optional<InstanceInfo>& holder) {
  if (!holder.has_value()) {  // released meanwhile, or not readable
    absl::Status refusal = absl::UnavailableError(
        absl::StrCat(status.message(), "; pid ", replaced.pid,
                     " was stopped to replace it"));
    if (std::optional<HolderInfo> known = HolderFromStatus(status)) {
      AttachHolder(refusal, *known);
    }
    return refusal;
  }
  const bool inherited = holder->inherited_from_pid != 0 &&
                         (holder->inherited_from_pid == replaced.pid ||
                          holder->inherited_from_pid == replaced.locker_pid);
  return Refusal(
      absl::StatusCode::kUnavailable,
      absl::StrCat(Describe(target, *holder),
                   "; not replacing it: stopped pid ", replaced.pid,
                   inherited
                       ? ", but processes it left running keep the lock it "
                         "passed on to them, and only a process that an owner "
                         "record names is signalled"
                       : ", but another copy took the lock meanwhile"),
      *holder);
}

}  // namespace

std::string Describe(const ConflictTarget& target, const InstanceInfo& holder) {
  return target.is_path ? DescribeHeld(target.display_name, holder)
                        : DescribeRunning(target.display_name, holder);
}

absl::Status LockFailingAtOnce(const ConflictTarget& target,
                               LockAttempt attempt) {
  for (int try_number = 0; try_number < kConflictAttempts; ++try_number) {
    absl::Status tried = attempt(absl::ZeroDuration());
    // FailedPrecondition with a holder: this very thread holds it ("would
    // deadlock"), which for a refusal is just another running copy.
    if (tried.ok() ||
        (!absl::IsUnavailable(tried) && !HolderFromStatus(tried).has_value())) {
      return tried;
    }
    absl::StatusOr<std::optional<InstanceInfo>> holder =
        HolderAfter(target, tried);
    if (!holder.ok()) return tried;
    if (!holder->has_value()) continue;  // released meanwhile
    return Refusal(absl::StatusCode::kUnavailable, Describe(target, **holder),
                   **holder);
  }
  return KeepsChanging(target);
}

absl::Status LockWaiting(const ConflictTarget& target, LockAttempt attempt,
                         absl::Duration timeout) {
  std::optional<InstanceInfo> holder;
  return WaitFor(target, attempt, timeout, &holder);
}

absl::Status LockReplacing(const ConflictTarget& target, LockAttempt attempt,
                           absl::Duration grace_period) {
  for (int try_number = 0; try_number < kConflictAttempts; ++try_number) {
    absl::Status tried = attempt(absl::ZeroDuration());
    if (tried.ok() || !absl::IsUnavailable(tried)) return tried;
    Inspection inspection;
    absl::StatusOr<std::optional<InstanceInfo>> held_by =
        HolderAfter(target, tried, &inspection);
    if (!held_by.ok()) return held_by.status();
    if (!held_by->has_value()) continue;  // released meanwhile
    const InstanceInfo& holder = **held_by;
    if (std::string why = WhyNotReplaceable(inspection, holder); !why.empty()) {
      return Refusal(
          absl::StatusCode::kFailedPrecondition,
          absl::StrCat(Describe(target, holder), "; not replacing it: ", why),
          holder);
    }
    if (absl::Status terminated = TerminateHolder(target, holder, grace_period);
        !terminated.ok()) {
      return terminated;
    }
    // The holder is gone. Unless processes it left running keep the lock
    // (they inherited its descriptor), the kernel released it before the
    // pidfd became readable; wait a little in case a copy that started
    // meanwhile got there first and is about to exit too.
    std::optional<InstanceInfo> after_holder;
    absl::Status after = WaitFor(target, attempt, grace_period, &after_holder);
    if (after.ok() ||
        (!absl::IsDeadlineExceeded(after) && !absl::IsUnavailable(after))) {
      return after;
    }
    if (!after_holder.has_value() && absl::IsUnavailable(after)) {
      // A grace period of zero tried once: look at who holds it.
      absl::StatusOr<std::optional<InstanceInfo>> now =
          HolderAfter(target, after);
      if (now.ok()) after_holder = *std::move(now);
    }
    return ReplacedButHeld(target, holder, after, after_holder);
  }
  return KeepsChanging(target);
}

absl::Status CheckLegacyLocks(const ConflictTarget& target,
                              const std::vector<std::string>& legacy_paths,
                              bool wait, absl::Duration wait_timeout,
                              absl::Time deadline, LegacyWait wait_for) {
  for (const std::string& path : legacy_paths) {
    absl::StatusOr<Inspection> inspection = InspectLockFile(path);
    // Not a lock file (something else is there) or not ours to read: no
    // copy of ours can hold it.
    if (!inspection.ok()) continue;
    std::optional<InstanceInfo> holder = HolderFrom(*inspection);
    if (!holder.has_value()) continue;
    const std::string refusal =
        absl::StrCat(Describe(target, *holder), ", in ", path,
                     " where an earlier onlyone build keeps this lock");
    if (!wait) return Refusal(absl::StatusCode::kUnavailable, refusal, *holder);
    absl::Status waited =
        wait_for(path, std::max(deadline - absl::Now(), absl::ZeroDuration()));
    if (absl::IsDeadlineExceeded(waited)) {
      return Refusal(
          absl::StatusCode::kDeadlineExceeded,
          absl::StrCat(refusal, "; gave up after waiting ",
                       absl::FormatDuration(wait_timeout), " for it to exit"),
          *holder);
    }
    if (!waited.ok()) return waited;
  }
  return absl::OkStatus();
}

}  // namespace onlyone::internal
