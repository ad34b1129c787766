#include "onlyone/internal/holder_inspection.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "onlyone/internal/file_kind.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/printable.h"

namespace onlyone::internal {
namespace {

// DescribeRunning() shows at most this much of the command line.
constexpr size_t kMaxDescribedCommandBytes = 256;

// The kernel's holders as a refusal found them, and their names.
std::vector<FlockHolder> KernelHolders(
    const HolderInfo& known,
    std::vector<std::pair<pid_t, std::string>>* names) {
  std::vector<FlockHolder> holders;
  for (const LockHolderProcess& process : known.holders) {
    holders.push_back({process.pid, process.exclusive});
    names->emplace_back(process.pid, process.name);
  }
  return holders;
}

bool Lists(const std::vector<FlockHolder>& holders, pid_t pid) {
  return std::any_of(
      holders.begin(), holders.end(),
      [pid](const FlockHolder& holder) { return holder.pid == pid; });
}

std::string PidList(const std::vector<FlockHolder>& holders) {
  std::vector<std::string> pids;
  for (const FlockHolder& holder : holders)
    pids.push_back(absl::StrCat(holder.pid));
  return absl::StrJoin(pids, ", ");
}

// "" when `record` describes the holder; otherwise why not. The record is
// believed when it was written in this boot, the recorded process is alive
// with the recorded start time (so a dead holder's record, or a reused pid,
// is not believed), and it holds the lock itself: its /proc/PID/fdinfo
// shows the lock, or, where /proc does not show us its descriptors (another
// user's process), the kernel lists it in /proc/locks. So a holder cannot
// make its record name some other live process; a zombie, which the kernel
// may still list as the lock's taker while children it left hold the lock,
// holds nothing; and after a fork hand-off, where the kernel lists the
// process that took the lock (locker_pid), the recorded one proves itself.
std::string VerifyRecord(const OwnerRecord& record,
                         const Inspection& inspection) {
  if (record.boot_id != BootId()) {
    return absl::StrCat(
        "its owner record is from another boot or machine (boot id ",
        Printable(record.boot_id), ")");
  }
  if (!RecordedProcessIsAlive(record)) {
    return absl::StrCat("its owner record names pid ", record.pid,
                        ", which is not running, or is another process now "
                        "(start time differs)");
  }
  if (!inspection.holders_known) return "";
  const bool listed = Lists(inspection.holders, record.pid);
  if (ProcessHoldsFlockOn(record.pid, inspection.device, inspection.inode)
          .value_or(listed)) {
    return "";
  }
  if (listed) {
    return absl::StrCat("its owner record names pid ", record.pid,
                        ", which no longer holds the lock");
  }
  return absl::StrCat("its owner record names pid ", record.pid,
                      ", which does not hold the lock",
                      inspection.holders.empty()
                          ? ""
                          : absl::StrCat(" (the kernel lists pid ",
                                         PidList(inspection.holders), ")"));
}

// `pid` as /proc shows it, its name taken from what the backend read.
HolderProcess DescribeProcess(pid_t pid, const Inspection& inspection) {
  HolderProcess process;
  process.pid = pid;
  process.command_line = ProcessCommandLine(pid, kMaxCommandLineBytes);
  auto known =
      std::find_if(inspection.known_names.begin(), inspection.known_names.end(),
                   [pid](const std::pair<pid_t, std::string>& name) {
                     return name.first == pid;
                   });
  process.name =
      known != inspection.known_names.end() ? known->second : ProcessName(pid);
  return process;
}

// The live processes that hold the lock, from the kernel's list: each
// listed process that still holds it, and, for each that no longer does
// (it exited, or closed its descriptor, or its pid is another process's
// now), the processes that hold the lock it took, which inherited its
// descriptor. Only the second case reads every process's fdinfo. A listed
// process whose descriptors /proc does not show us (another user's) is
// neither. Sets *inherited_from to such a former holder (0 when none).
std::vector<pid_t> LiveHolders(const std::vector<FlockHolder>& holders,
                               dev_t device, ino_t inode,
                               pid_t* inherited_from) {
  *inherited_from = 0;
  std::vector<pid_t> live;
  std::vector<pid_t> gone;
  for (const FlockHolder& holder : holders) {
    if (holder.pid <= 0) continue;  // outside our pid namespace
    const std::optional<bool> holds =
        ProcessHoldsFlockOn(holder.pid, device, inode);
    if (!holds.has_value()) continue;
    if (*holds) {
      live.push_back(holder.pid);
    } else {
      gone.push_back(holder.pid);
    }
  }
  if (gone.empty()) return live;
  for (const FlockHoldingProcess& process :
       ProcessesHoldingFlockOn(device, inode)) {
    if (std::find(live.begin(), live.end(), process.pid) != live.end()) {
      continue;
    }
    for (pid_t locker : process.locker_pids) {
      if (std::find(gone.begin(), gone.end(), locker) == gone.end()) continue;
      live.push_back(process.pid);
      if (*inherited_from == 0) *inherited_from = locker;
      break;
    }
  }
  return live;
}

// A command line as messages show it: the arguments joined by spaces (or
// `fallback` without any), cut to kMaxDescribedCommandBytes, printable.
// None of it was written by us: it comes from an owner record or /proc.
std::string ShownCommand(const std::vector<std::string>& command_line,
                         const std::string& fallback) {
  std::string command =
      command_line.empty() ? fallback : absl::StrJoin(command_line, " ");
  if (command.size() > kMaxDescribedCommandBytes) {
    // Cut between characters, not inside a multi-byte one.
    size_t cut = kMaxDescribedCommandBytes;
    while (cut > 0 &&
           (static_cast<unsigned char>(command[cut]) & 0xc0) == 0x80) {
      --cut;
    }
    command.resize(cut);
    command.append("...");
  }
  return Printable(command);
}

// What a message says of a holder: who first (its pid, or the pids and
// commands of several live holders), then what the record, or without one
// /proc, tells.
std::vector<std::string> HolderDetails(const InstanceInfo& holder) {
  std::vector<std::string> details;
  const bool several = !holder.has_record && holder.processes.size() > 1;
  if (several) {
    std::vector<std::string> each;
    for (const HolderProcess& process : holder.processes) {
      const std::string command =
          ShownCommand(process.command_line, process.name);
      each.push_back(command.empty()
                         ? absl::StrCat(process.pid)
                         : absl::StrCat(process.pid, " (", command, ")"));
    }
    details.push_back(absl::StrCat("pids ", absl::StrJoin(each, ", ")));
  } else if (holder.pid > 0) {
    details.push_back(absl::StrCat("pid ", holder.pid));
  } else {
    details.push_back("holder's pid not visible");
  }
  if (holder.process_start_time != absl::InfinitePast()) {
    details.push_back(absl::StrCat(
        "started ",
        absl::FormatTime("%Y-%m-%d %H:%M:%S", holder.process_start_time,
                         absl::LocalTimeZone())));
  }
  std::string command;
  if (holder.has_record) {
    command = ShownCommand(holder.command_line, holder.executable);
  } else if (holder.processes.size() == 1) {
    command = ShownCommand(holder.processes.front().command_line,
                           holder.processes.front().name);
  } else if (!several && holder.pid > 0) {
    // Not shown to hold it by /proc (another user's process): the kernel's
    // name for the pid it lists, as ScopedFileLock's messages give it.
    command = Printable(ProcessName(holder.pid));
  }
  if (!command.empty()) details.push_back(command);
  if (holder.inherited_from_pid != 0) {
    details.push_back(absl::StrCat("inherited from pid ",
                                   holder.inherited_from_pid,
                                   ", which no longer holds it"));
  }
  if (!holder.has_record) {
    if (!holder.no_record_reason.empty()) {
      details.push_back(Printable(holder.no_record_reason));
    } else if (holder.inherited_from_pid == 0) {
      details.push_back("no owner record");
    }
  }
  return details;
}
}  // namespace

// Looks at a lock file without locking it: /proc/locks for the holders
// (unless `known` read it), and only when it cannot be read, a non-blocking
// shared probe that is released at once (a probe could make a concurrent
// try-lock fail).
absl::StatusOr<Inspection> InspectLockFile(const std::string& path,
                                           const HolderInfo* known) {
  Inspection inspection;
  inspection.path = path;
  // Refused before opening: opening a device can have effects of its own.
  struct stat file;
  if (lstat(path.c_str(), &file) != 0) {
    const int error_number = errno;
    if (error_number == ENOENT) return inspection;  // never locked
    return PosixError(absl::StrCat(path, ": lstat"), error_number);
  }
  if (!S_ISREG(file.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is ", NonRegularFileKind(file.st_mode),
                     ", not a lock file; it is never followed or opened"));
  }
  int fd = open(path.c_str(),
                O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int error_number = errno;
    if (error_number == ENOENT) return inspection;  // removed meanwhile
    // Not readable by us: the kernel can still say who holds it.
    if (error_number != EACCES) {
      return PosixError(absl::StrCat(path, ": open"), error_number);
    }
  } else {
    struct stat opened;
    if (fstat(fd, &opened) != 0) {
      const int error_number = errno;
      close(fd);
      return PosixError(absl::StrCat(path, ": fstat"), error_number);
    }
    if (!S_ISREG(opened.st_mode)) {
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(path, " is ", NonRegularFileKind(opened.st_mode),
                       ", not a lock file; it is never followed or opened"));
    }
    file = opened;  // the file we read the record from
  }
  absl::Cleanup close_fd = [fd] {
    if (fd >= 0) close(fd);
  };
  inspection.device = file.st_dev;
  inspection.inode = file.st_ino;
  std::optional<std::vector<FlockHolder>> holders;
  if (known != nullptr && known->holders_known &&
      known->device == file.st_dev && known->inode == file.st_ino) {
    holders = KernelHolders(*known, &inspection.known_names);
  } else {
    holders = ReadFlockHolders(file.st_dev, file.st_ino);
  }
  if (holders.has_value()) {
    inspection.holders_known = true;
    inspection.holders = *std::move(holders);
    inspection.held = !inspection.holders.empty();
    if (!inspection.held && !InInitialPidNamespace()) {
      inspection.hidden_holders =
          ProcessesHoldingFlockOn(file.st_dev, file.st_ino);
      inspection.held = !inspection.hidden_holders.empty();
    }
  } else if (fd >= 0) {
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
      flock(fd, LOCK_UN);
      inspection.held = false;
    } else if (errno == EWOULDBLOCK) {
      inspection.held = true;
    } else {
      return PosixError(absl::StrCat(path, ": flock"), errno);
    }
  } else {
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot tell whether ", path,
        " is held: /proc/locks is not readable and neither is the file"));
  }
  if (inspection.held && fd >= 0) {
    if (std::optional<OwnerRecord> record = ReadOwnerRecord(fd)) {
      inspection.record_rejected = VerifyRecord(*record, inspection);
      if (inspection.record_rejected.empty()) {
        inspection.record = std::move(record);
      } else {
        inspection.rejected_record_pid = record->pid;
      }
    } else if (file.st_size > 0) {
      inspection.record_rejected =
          "no owner record: the file holds other data, which onlyone never "
          "overwrites";
    }
  }
  return inspection;
}

std::optional<InstanceInfo> HolderFrom(const Inspection& inspection) {
  if (!inspection.held) return std::nullopt;
  if (inspection.record.has_value()) {
    InstanceInfo info = *inspection.record;
    info.lock_path = inspection.path;
    info.processes.push_back(DescribeProcess(info.pid, inspection));
    return info;
  }
  InstanceInfo info;
  info.lock_path = inspection.path;
  info.no_record_reason = inspection.record_rejected;
  // The exclusive holder first (a SingleInstance holds it exclusively).
  std::vector<FlockHolder> holders = inspection.holders;
  std::stable_partition(
      holders.begin(), holders.end(),
      [](const FlockHolder& holder) { return holder.exclusive; });
  for (pid_t pid : LiveHolders(holders, inspection.device, inspection.inode,
                               &info.inherited_from_pid)) {
    info.processes.push_back(DescribeProcess(pid, inspection));
  }
  for (const FlockHoldingProcess& hidden : inspection.hidden_holders) {
    info.processes.push_back(DescribeProcess(hidden.pid, inspection));
  }
  if (!info.processes.empty()) {
    info.pid = info.processes.front().pid;
  } else if (!holders.empty()) {
    info.pid = holders.front().pid;  // what the kernel says, unverified
  }
  // A record that names the process the lock was inherited from says no
  // more than "inherited from" does.
  if (info.inherited_from_pid != 0 &&
      inspection.rejected_record_pid == info.inherited_from_pid) {
    info.no_record_reason.clear();
  }
  return info;
}

bool KernelLists(const Inspection& inspection, pid_t pid) {
  return Lists(inspection.holders, pid);
}

std::string KernelPidList(const Inspection& inspection) {
  return PidList(inspection.holders);
}

std::string DescribeRunning(absl::string_view name,
                            const InstanceInfo& holder) {
  return absl::StrCat(Printable(name), " is already running (",
                      absl::StrJoin(HolderDetails(holder), ", "), ")");
}

std::string DescribeHeld(absl::string_view lock_path,
                         const InstanceInfo& holder) {
  std::vector<std::string> details = HolderDetails(holder);
  const std::string who = details.front();
  details.erase(details.begin());
  return details.empty()
             ? absl::StrCat(Printable(lock_path), " is held by ", who)
             : absl::StrCat(Printable(lock_path), " is held by ", who, " (",
                            absl::StrJoin(details, ", "), ")");
}

HolderInfo HolderInfoOf(const InstanceInfo& holder) {
  HolderInfo info;
  info.resource = holder.lock_path;
  info.holders_known = !holder.processes.empty() || holder.pid > 0;
  for (const HolderProcess& process : holder.processes) {
    LockHolderProcess& shown = info.holders.emplace_back();
    shown.pid = process.pid;
    shown.name = process.name;
  }
  if (holder.processes.empty() && holder.pid > 0) {
    info.holders.emplace_back().pid = holder.pid;
  }
  return info;
}

}  // namespace onlyone::internal
