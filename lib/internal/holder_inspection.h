// Who holds an instance lock file: the kernel's answer (/proc/locks, and
// /proc/PID/fdinfo for holders that inherited the lock), and the owner
// record when it describes the holder; and the one-line description that
// refusals and `onlyone status` give of it.
//
// Example:
//   absl::StatusOr<Inspection> inspection = InspectLockFile(path, known);
//   if (!inspection.ok()) return inspection.status();
//   if (std::optional<InstanceInfo> holder = HolderFrom(*inspection)) {
//     std::cerr << DescribeRunning("nightly", *holder) << "\n";
//   }
//
// Contract:
//  * Looking never locks, never blocks on a lock and never writes: only
//    when /proc/locks cannot be read does InspectLockFile() probe with a
//    non-blocking shared flock(2) that it releases at once.
//  * What a refusal already found (a HolderInfo from the backend's status)
//    is reused: /proc/locks and the holders' names are not read again when
//    it is about the file found at the path.
//  * A record is believed only as VerifyRecord() in the .cc explains: this
//    boot, the recorded process alive with its recorded start time, and
//    holding the lock itself.
//
// Thread safety: the functions are thread-safe; each reads /proc anew.

#ifndef ONLYONE_LIB_INTERNAL_HOLDER_INSPECTION_H_
#define ONLYONE_LIB_INTERNAL_HOLDER_INSPECTION_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "onlyone/internal/holder_info.h"
#include "onlyone/internal/instance_info.h"
#include "onlyone/internal/instance_record.h"
#include "onlyone/internal/proc_locks.h"

namespace onlyone::internal {

struct Inspection {
  std::string path;
  dev_t device = 0;
  ino_t inode = 0;
  bool held = false;
  // /proc/locks was readable (or the backend read it), so `holders` is the
  // kernel's list.
  bool holders_known = false;
  std::vector<FlockHolder> holders;
  // The names of `holders` the backend already read (/proc/PID/comm).
  std::vector<std::pair<pid_t, std::string>> known_names;
  // A valid record that describes a live process the kernel agrees holds
  // the lock.
  std::optional<OwnerRecord> record;
  // Why the file's contents were not believed as a record ("" when it was
  // empty or the record was believed), and the pid that record names.
  std::string record_rejected;
  pid_t rejected_record_pid = 0;
  // In a pid namespace, where /proc/locks leaves out a lock whose taker has
  // exited or is outside it: the processes whose fdinfo shows they hold it
  // (see InInitialPidNamespace()). Only looked for when /proc/locks lists
  // no holder.
  std::vector<FlockHoldingProcess> hidden_holders;
};

// Looks at the lock file at `path` without locking it. `known`, when not
// null, is what a refusal found about the holders (HolderFromStatus()),
// reused when it is about the file now at `path`. NotFound never: a missing
// file is an Inspection with held false. InvalidArgument for a file that is
// not a regular file (never opened); the errno's status otherwise.
[[nodiscard]] absl::StatusOr<Inspection> InspectLockFile(
    const std::string& path, const HolderInfo* known = nullptr);

// The holder an inspection found; nullopt when the file is not held.
std::optional<InstanceInfo> HolderFrom(const Inspection& inspection);

// Whether the kernel lists `pid` as a holder, and the pids it lists
// ("10, 11"), for messages.
bool KernelLists(const Inspection& inspection, pid_t pid);
std::string KernelPidList(const Inspection& inspection);

// "NAME is already running (pid 4711, started ..., /usr/bin/backup)".
std::string DescribeRunning(absl::string_view name, const InstanceInfo& holder);
// "PATH is held by pid 4711 (started ..., ...)".
std::string DescribeHeld(absl::string_view lock_path,
                         const InstanceInfo& holder);

// The holder as a refusal's payload (lib/lock_holder.h): its live
// processes, or the pid the kernel gave.
HolderInfo HolderInfoOf(const InstanceInfo& holder);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_HOLDER_INSPECTION_H_
