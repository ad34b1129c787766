// What identifies a process across time, and waiting for one to exit.
//
// A pid alone does not identify a process: pids are reused. A process is
// identified by (boot id, pid, start time in clock ticks since boot), the
// start time being field 22 of /proc/PID/stat, which never changes for the
// life of the process and is exact (no rounding through wall-clock time).
//
// Thread safety: all functions are thread-safe.

#ifndef ONLYONE_LIB_INTERNAL_INSTANCE_PROCESS_H_
#define ONLYONE_LIB_INTERNAL_INSTANCE_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/internal/instance_record.h"

namespace onlyone::internal {

// Field 22 of /proc/PID/stat; nullopt when the process does not exist or
// /proc does not show it.
std::optional<uint64_t> ProcessStartTicks(pid_t pid);

// /proc/sys/kernel/random/boot_id without its newline ("" if unreadable);
// read once per process.
const std::string& BootId();

// This process as an owner record (pid, locker_pid, start, boot id, host,
// user, executable, command line, version; acquired_at is left unset), and
// those lines encoded.
struct SelfIdentity {
  OwnerRecord record;
  EncodedIdentity encoded;
};

// This process's identity, read from /proc once per process and kept (never
// freed, so a reference stays valid). A pthread_atfork handler forgets it in
// a fork()ed child, which reads its own (a raw clone(2) would skip the
// handler). The uid is the effective uid at the first call; see SelfRecord().
const SelfIdentity& CachedSelfIdentity();

// SelfIdentity's record for effective uid `euid` (the caller's geteuid(),
// passed in to save a system call): the cached one, with the uid and user
// name replaced when the effective uid has changed since (setuid(2)).
OwnerRecord SelfRecord(uid_t euid);

// Whether `record` describes a process that is alive now: same boot and the
// same start ticks at the recorded pid.
bool RecordedProcessIsAlive(const OwnerRecord& record);

// A pidfd (pidfd_open(2), close-on-exec) for `pid`. Unimplemented when the
// kernel lacks pidfds (before Linux 5.3); NotFound when no such process.
[[nodiscard]] absl::StatusOr<int> OpenPidfd(pid_t pid);

// pidfd_send_signal(2); signal 0 checks that we may signal the process.
[[nodiscard]] absl::Status SignalPidfd(int pidfd, pid_t pid, int signal);

// Waits (poll(2) on the pidfd, no polling loop) until the process exits or
// `timeout` passes; true if it exited.
bool WaitForExit(int pidfd, absl::Duration timeout);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_INSTANCE_PROCESS_H_
