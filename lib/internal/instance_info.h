// The home of InstanceInfo, the one type for who holds an instance lock:
// what the holder's owner record says (lib/internal/instance_record.h
// reads and writes it as OwnerRecord) and what the kernel and /proc add.
// Public through lib/single_instance.h; it lives here, below both the
// record and SingleInstance, so that internals need no public header.
//
// Example:
//   absl::StatusOr<std::optional<onlyone::InstanceInfo>> holder =
//       onlyone::SingleInstance::Holder("nightly");
//   if (holder.ok() && holder->has_value()) std::cout << (*holder)->pid;
//
// Thread safety: plain values.

#ifndef ONLYONE_LIB_INTERNAL_INSTANCE_INFO_H_
#define ONLYONE_LIB_INTERNAL_INSTANCE_INFO_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace onlyone {

// A live process that holds an instance lock, as /proc shows it.
struct HolderProcess {
  pid_t pid = 0;
  // /proc/PID/cmdline, exactly (at most 4096 bytes of it); empty when
  // unreadable (a zombie, a kernel thread, /proc mounted with hidepid).
  std::vector<std::string> command_line;
  // /proc/PID/comm: the name it gave itself, at most 15 bytes.
  std::string name;
};

// Who holds an instance lock. The record's fields (from locker_pid on) are
// empty/zero when the holder wrote no record (for example flock(1) on the
// same file) or its record was not believed.
struct InstanceInfo {
  // The holder: with a record, the recorded process (the process that wrote
  // it). Without one, a live process that holds the lock
  // (processes.front()); only when /proc shows none (another user's
  // processes, without privilege), the pid /proc/locks gives, which is the
  // process that took the lock and may have exited.
  pid_t pid = 0;

  // What the kernel and /proc tell, beyond the record.

  // The lock file it holds: LockPath(), or where an earlier onlyone build
  // kept the same lock (see docs/design.md, "Where the locks live").
  std::string lock_path;
  // False when the kernel reports a holder but no valid, matching record
  // exists: `pid` and `processes` (from /proc) are then what is known.
  bool has_record = false;
  // When has_record is false: why, if the file holds something ("the
  // record names pid 1, which does not hold the lock"); "" when it holds
  // nothing.
  std::string no_record_reason;
  // The live processes known to hold the lock, `pid` first: with a record,
  // the recorded process; without, the processes /proc/locks lists that
  // still hold it, and the processes that inherited it from one that no
  // longer does (a killed `onlyone run`'s command, a daemon whose parent
  // exited), found in their /proc/PID/fdinfo. Empty when /proc shows none.
  std::vector<HolderProcess> processes;
  // When the process that took the lock (as /proc/locks names it) no longer
  // holds it and `processes` inherited it: that process's pid; else 0.
  pid_t inherited_from_pid = 0;

  // The owner record (lib/internal/instance_record.h has its format).

  // The process that took the lock, the pid /proc/locks shows; differs from
  // `pid` after a fork hand-off (ScopedFileLock::HandOffOnFork()).
  pid_t locker_pid = 0;
  // The holder's start time in clock ticks since boot (/proc/PID/stat):
  // with boot_id, what identifies the process exactly.
  uint64_t start_ticks = 0;
  // The same as wall-clock time.
  absl::Time process_start_time = absl::InfinitePast();
  absl::Time acquired_at = absl::InfinitePast();
  std::string boot_id;
  std::string hostname;
  uid_t uid = 0;
  std::string user;
  std::string executable;
  std::vector<std::string> command_line;
  // Whether command_line was cut to its bound.
  bool command_line_truncated = false;
  std::string version;
};

}  // namespace onlyone

#endif  // ONLYONE_LIB_INTERNAL_INSTANCE_INFO_H_
