#include "onlyone/single_instance.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/base/internal/raw_logging.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "onlyone/internal/file_kind.h"
#include "onlyone/internal/instance_channel.h"
#include "onlyone/internal/instance_paths.h"
#include "onlyone/internal/instance_process.h"
#include "onlyone/internal/instance_record.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/printable.h"
#include "onlyone/internal/proc_locks.h"
#include "onlyone/internal/small_file.h"

namespace onlyone {
namespace {

using internal::FlockHolder;
using internal::OwnerRecord;
using internal::PosixError;

// A conflict is re-examined this many times when the holder vanishes between
// the failed try and the look at who holds it.
constexpr int kConflictAttempts = 3;
// How long kReplace waits for the holder to die after SIGKILL (it can only
// take longer in uninterruptible sleep).
constexpr absl::Duration kKillWait = absl::Seconds(5);
// Hard ceiling for InstanceOptions::max_message_bytes.
constexpr size_t kMaxMessageBytesCeiling = 64 * 1024 * 1024;
// /proc/locks lists every lock of the machine.
constexpr size_t kMaxProcLocksBytes = 64 << 20;
// DescribeRunning() shows at most this much of the command line.
constexpr size_t kMaxDescribedCommandBytes = 256;

struct Location {
  std::string display_name;  // the instance name, or the lock path
  std::string lock_path;
  // AcquireAtPath(): messages say "PATH is held", not "NAME is running".
  bool is_path = false;
  bool shared = false;
  mode_t file_mode = kDefaultLockFileMode;
  // The user and session scopes' directories are onlyone's own.
  internal::LockFilePlace place = internal::LockFilePlace::kElsewhere;
  // False for a file that holds someone's data, which gets no record: it is
  // locked through a read-only descriptor, so that a script locking its own
  // file can still be executed.
  bool writable = true;
  uid_t euid = 0;  // geteuid(), read once per call
  // For LegacyLockPaths(), computed only when needed: where earlier
  // onlyone builds kept this lock. Unset for a path.
  std::optional<internal::DirectoryKind> kind;
  internal::InstanceDirectory directory;
};

internal::DirectoryKind KindFor(const InstanceOptions& options) {
  if (!options.directory.empty()) return internal::DirectoryKind::kExplicit;
  switch (options.scope) {
    case Scope::kSession:
      return internal::DirectoryKind::kSession;
    case Scope::kMachine:
      return internal::DirectoryKind::kMachine;
    case Scope::kUser:
      break;
  }
  return internal::DirectoryKind::kUser;
}

absl::StatusOr<Location> Locate(absl::string_view name,
                                const InstanceOptions& options) {
  if (absl::Status valid = internal::ValidateInstanceName(name); !valid.ok()) {
    return valid;
  }
  const internal::DirectoryKind kind = KindFor(options);
  absl::StatusOr<internal::InstanceDirectory> directory =
      internal::ResolveInstanceDirectory(kind, options.directory);
  if (!directory.ok()) return directory.status();
  Location location;
  location.display_name = std::string(name);
  location.lock_path = internal::LockPathIn(*directory, name);
  location.shared = directory->shared;
  location.file_mode = directory->lock_file_mode();
  location.euid = directory->euid;
  location.kind = kind;
  if (kind == internal::DirectoryKind::kUser ||
      kind == internal::DirectoryKind::kSession) {
    location.place = internal::LockFilePlace::kOwnPrivateDirectory;
  }
  location.directory = *std::move(directory);
  return location;
}

// Whether `path` is a regular file that holds data other than an owner
// record. Looked at before locking only to choose the access mode; whether a
// record is written is decided again on the locked descriptor.
bool HoldsOtherData(const std::string& path) {
  const int fd = open(path.c_str(),
                      O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return false;  // missing, or Acquire will say why
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat file;
  if (fstat(fd, &file) != 0 || !S_ISREG(file.st_mode)) return false;
  absl::StatusOr<bool> may_hold_record =
      internal::MayHoldOwnerRecord(fd, path, file);
  return may_hold_record.ok() && !*may_hold_record;
}

// Where earlier onlyone builds kept the lock of `location`.
std::vector<std::string> LegacyLockPaths(const Location& location) {
  if (!location.kind.has_value()) return {};
  return internal::LegacyLockPaths(*location.kind, location.directory,
                                   location.display_name);
}

// A lock file given by path: shared between users (mode 0666) when its
// directory is sticky and writable by everyone, like /run/lock.
Location LocatePath(absl::string_view lock_path) {
  Location location;
  location.display_name = std::string(lock_path);
  location.lock_path = std::string(lock_path);
  location.is_path = true;
  location.euid = geteuid();
  const size_t slash = location.lock_path.rfind('/');
  const std::string directory =
      slash == std::string::npos
          ? "."
          : (slash == 0 ? "/" : location.lock_path.substr(0, slash));
  struct stat info;
  if (stat(directory.c_str(), &info) == 0 && (info.st_mode & S_IWOTH) != 0 &&
      (info.st_mode & S_ISVTX) != 0) {
    location.shared = true;
    location.file_mode = internal::kSharedLockFileMode;
  }
  location.writable = !HoldsOtherData(location.lock_path);
  return location;
}

// The one-line description of a holder, for a name or a path.
std::string Describe(const Location& location, const InstanceInfo& holder) {
  return location.is_path
             ? SingleInstance::DescribeHeld(location.display_name, holder)
             : SingleInstance::DescribeRunning(location.display_name, holder);
}

absl::Status ValidateMessagingOptions(absl::string_view name,
                                      const InstanceOptions& options) {
  if (options.max_message_bytes == 0 ||
      options.max_message_bytes > kMaxMessageBytesCeiling) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": max_message_bytes must be 1 to ", kMaxMessageBytesCeiling,
        ", not ", options.max_message_bytes));
  }
  if (options.message_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": message_timeout must be positive, not ",
                     absl::FormatDuration(options.message_timeout)));
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(absl::string_view name,
                             const InstanceOptions& options) {
  if (options.wait_timeout < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": negative wait_timeout ",
                     absl::FormatDuration(options.wait_timeout)));
  }
  if (options.grace_period < absl::ZeroDuration() ||
      options.grace_period == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": grace_period must be finite and not negative, "
                     "not ",
                     absl::FormatDuration(options.grace_period)));
  }
  if (options.shared && (options.on_conflict == ConflictPolicy::kReplace ||
                         options.listen)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": a shared lock can neither replace its holders nor listen "
              "for messages (many copies hold it at once)"));
  }
  if (options.on_message && !options.listen) {
    return absl::InvalidArgumentError(absl::StrCat(
        name,
        ": on_message is set but listen is not; set listen to receive "
        "messages"));
  }
  return ValidateMessagingOptions(name, options);
}

// ---------------------------------------------------------------------------
// Who holds a lock file: the kernel's answer, and the record when it
// describes the holder.

struct Inspection {
  std::string path;
  dev_t device = 0;
  ino_t inode = 0;
  bool held = false;
  // /proc/locks was readable, so `holders` is the kernel's list.
  bool holders_known = false;
  std::vector<FlockHolder> holders;
  // A valid record that describes a live process the kernel agrees holds
  // the lock; see VerifyRecord().
  std::optional<OwnerRecord> record;
  // Why the file's contents were not believed as a record ("" when it was
  // empty or the record was believed), and the pid that record names.
  std::string record_rejected;
  pid_t rejected_record_pid = 0;
  // In a pid namespace, where /proc/locks leaves out a lock whose taker has
  // exited or is outside it: the processes whose fdinfo shows they hold it
  // (see internal::InInitialPidNamespace()). Only looked for when
  // /proc/locks lists no holder.
  std::vector<internal::FlockHoldingProcess> hidden_holders;
};

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
  if (record.boot_id != internal::BootId()) {
    return absl::StrCat(
        "its owner record is from another boot or machine (boot id ",
        internal::Printable(record.boot_id), ")");
  }
  if (!internal::RecordedProcessIsAlive(record)) {
    return absl::StrCat("its owner record names pid ", record.pid,
                        ", which is not running, or is another process now "
                        "(start time differs)");
  }
  if (!inspection.holders_known) return "";
  const bool listed = Lists(inspection.holders, record.pid);
  if (internal::ProcessHoldsFlockOn(record.pid, inspection.device,
                                    inspection.inode)
          .value_or(listed)) {
    return "";
  }
  if (listed) {
    return absl::StrCat("its owner record names pid ", record.pid,
                        ", which no longer holds the lock");
  }
  return absl::StrCat(
      "its owner record names pid ", record.pid, ", which does not hold the lock",
      inspection.holders.empty()
          ? ""
          : absl::StrCat(" (the kernel lists pid ",
                         PidList(inspection.holders), ")"));
}

// Looks at a lock file without locking it: /proc/locks for the holders, and
// only when /proc/locks cannot be read, a non-blocking shared probe that is
// released at once (a probe could make a concurrent try-lock fail).
absl::StatusOr<Inspection> InspectLockFile(const std::string& path) {
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
        absl::StrCat(path, " is ", internal::NonRegularFileKind(file.st_mode),
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
          absl::StrCat(path, " is ", internal::NonRegularFileKind(opened.st_mode),
                       ", not a lock file; it is never followed or opened"));
    }
    file = opened;  // the file we read the record from
  }
  absl::Cleanup close_fd = [fd] {
    if (fd >= 0) close(fd);
  };
  inspection.device = file.st_dev;
  inspection.inode = file.st_ino;
  if (std::string locks;
      internal::ReadSmallFile("/proc/locks", kMaxProcLocksBytes, &locks)) {
    inspection.holders_known = true;
    inspection.holders =
        internal::ParseFlockHolders(locks, file.st_dev, file.st_ino);
    inspection.held = !inspection.holders.empty();
    if (!inspection.held && !internal::InInitialPidNamespace()) {
      inspection.hidden_holders =
          internal::ProcessesHoldingFlockOn(file.st_dev, file.st_ino);
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
    if (std::optional<OwnerRecord> record = internal::ReadOwnerRecord(fd)) {
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

InstanceInfo InfoFromRecord(const OwnerRecord& record) {
  InstanceInfo info;
  info.pid = record.pid;
  info.has_record = true;
  info.process_start_time = record.start_time;
  info.acquired_at = record.acquired_at;
  info.boot_id = record.boot_id;
  info.hostname = record.hostname;
  info.uid = record.uid;
  info.user = record.user;
  info.executable = record.executable;
  info.command_line = record.command_line;
  info.version = record.version;
  return info;
}

HolderProcess DescribeProcess(pid_t pid) {
  HolderProcess process;
  process.pid = pid;
  process.command_line =
      internal::ProcessCommandLine(pid, internal::kMaxCommandLineBytes);
  process.name = internal::ProcessName(pid);
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
        internal::ProcessHoldsFlockOn(holder.pid, device, inode);
    if (!holds.has_value()) continue;
    if (*holds) {
      live.push_back(holder.pid);
    } else {
      gone.push_back(holder.pid);
    }
  }
  if (gone.empty()) return live;
  for (const internal::FlockHoldingProcess& process :
       internal::ProcessesHoldingFlockOn(device, inode)) {
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

std::optional<InstanceInfo> HolderFrom(const Inspection& inspection) {
  if (!inspection.held) return std::nullopt;
  if (inspection.record.has_value()) {
    InstanceInfo info = InfoFromRecord(*inspection.record);
    info.lock_path = inspection.path;
    info.processes.push_back(DescribeProcess(info.pid));
    return info;
  }
  InstanceInfo info;
  info.lock_path = inspection.path;
  info.no_record_reason = inspection.record_rejected;
  // The exclusive holder first (a SingleInstance holds it exclusively).
  std::vector<FlockHolder> holders = inspection.holders;
  std::stable_partition(holders.begin(), holders.end(),
                        [](const FlockHolder& holder) {
                          return holder.exclusive;
                        });
  for (pid_t pid : LiveHolders(holders, inspection.device, inspection.inode,
                               &info.inherited_from_pid)) {
    info.processes.push_back(DescribeProcess(pid));
  }
  for (const internal::FlockHoldingProcess& hidden :
       inspection.hidden_holders) {
    info.processes.push_back(DescribeProcess(hidden.pid));
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
  return internal::Printable(command);
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
    command = internal::Printable(internal::ProcessName(holder.pid));
  }
  if (!command.empty()) details.push_back(command);
  if (holder.inherited_from_pid != 0) {
    details.push_back(absl::StrCat("inherited from pid ",
                                   holder.inherited_from_pid,
                                   ", which no longer holds it"));
  }
  if (!holder.has_record) {
    if (!holder.no_record_reason.empty()) {
      details.push_back(internal::Printable(holder.no_record_reason));
    } else if (holder.inherited_from_pid == 0) {
      details.push_back("no owner record");
    }
  }
  return details;
}

// ---------------------------------------------------------------------------
// Acquisition.

// This process's record without acquired_at: `recorded_command_line` and
// `recorded_executable` (when not empty) stand for its own.
OwnerRecord RecordForThisProcess(
    uid_t euid, const std::vector<std::string>& recorded_command_line,
    const std::string& recorded_executable) {
  OwnerRecord record = internal::SelfRecord(euid);
  if (!recorded_command_line.empty()) {
    record.command_line = recorded_command_line;
    record.command_line_truncated =
        internal::TruncateCommandLine(record.command_line);
  }
  if (!recorded_executable.empty()) record.executable = recorded_executable;
  return record;
}

// The owner record to write now, for a lock taken at `acquired_at`. The
// common case (no command line given, the same effective uid as when the
// identity was cached) reuses the encoded identity and costs one line.
std::string OwnerRecordFor(const internal::SelfIdentity& self,
                           const Location& location,
                           const InstanceOptions& options,
                           absl::Time acquired_at) {
  if (options.recorded_command_line.empty() &&
      options.recorded_executable.empty() &&
      self.record.uid == location.euid) {
    return internal::EncodeOwnerRecord(self.encoded, acquired_at);
  }
  return internal::EncodeOwnerRecord(
      internal::EncodeIdentity(RecordForThisProcess(
          location.euid, options.recorded_command_line,
          options.recorded_executable)),
      acquired_at);
}

absl::Status Conflict(const Location& location, absl::Status lock_status) {
  absl::StatusOr<Inspection> inspection = InspectLockFile(location.lock_path);
  if (!inspection.ok()) return lock_status;
  std::optional<InstanceInfo> holder = HolderFrom(*inspection);
  if (!holder.has_value()) return absl::OkStatus();  // released meanwhile
  return absl::UnavailableError(
      Describe(location, *holder));
}

absl::StatusOr<ScopedFileLock> LockFailAtOnce(const Location& location,
                                              const LockOptions& base) {
  LockOptions options = base;
  options.timeout = absl::ZeroDuration();
  for (int attempt = 0; attempt < kConflictAttempts; ++attempt) {
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::Acquire(location.lock_path, options);
    // FailedPrecondition: this very thread holds it ("would deadlock"),
    // which for a refusal is just another running copy.
    if (lock.ok() || (!absl::IsUnavailable(lock.status()) &&
                      !absl::IsFailedPrecondition(lock.status()))) {
      return lock;
    }
    absl::Status conflict = Conflict(location, lock.status());
    if (!conflict.ok()) return conflict;
  }
  return absl::UnavailableError(absl::StrCat(
      location.display_name, " is already running (", location.lock_path,
      " is held, by a process that keeps changing)"));
}

absl::StatusOr<ScopedFileLock> LockWaiting(const Location& location,
                                           const LockOptions& base,
                                           absl::Duration timeout) {
  LockOptions options = base;
  options.timeout = timeout;
  absl::StatusOr<ScopedFileLock> lock =
      ScopedFileLock::Acquire(location.lock_path, options);
  if (!absl::IsDeadlineExceeded(lock.status())) return lock;
  absl::StatusOr<Inspection> inspection = InspectLockFile(location.lock_path);
  if (!inspection.ok()) return lock.status();
  std::optional<InstanceInfo> holder = HolderFrom(*inspection);
  if (!holder.has_value()) return lock.status();
  return absl::DeadlineExceededError(absl::StrCat(
      Describe(location, *holder),
      "; gave up after waiting ", absl::FormatDuration(timeout),
      " for it to exit"));
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
  if (!Lists(inspection.holders, record.pid)) {
    return absl::StrCat("the kernel lists pid ", PidList(inspection.holders),
                        " as holding the lock, not recorded pid ", record.pid,
                        " (the lock was handed to it across a fork)");
  }
  if (record.hostname != internal::CachedSelfIdentity().record.hostname) {
    return absl::StrCat("it was recorded on host ",
                        internal::Printable(record.hostname));
  }
  if (record.pid == getpid()) return "it is this process";
  return "";
}

// Signals the verified holder through a pidfd, so that a pid reused after
// the check can never receive the signal. Returns OK once it has exited.
absl::Status TerminateHolder(const Location& location,
                             const InstanceInfo& holder,
                             const OwnerRecord& record,
                             const InstanceOptions& options) {
  const std::string refused_prefix = absl::StrCat(
      Describe(location, holder),
      "; not replacing it: ");
  absl::StatusOr<int> pidfd = internal::OpenPidfd(record.pid);
  if (absl::IsNotFound(pidfd.status())) return absl::OkStatus();  // gone
  if (!pidfd.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(refused_prefix, pidfd.status().message()));
  }
  absl::Cleanup close_pidfd = [fd = *pidfd] { close(fd); };
  // The pidfd now pins one process; it is the verified one only if the start
  // time still matches.
  if (internal::ProcessStartTicks(record.pid) != record.start_ticks) {
    return absl::OkStatus();  // exited between the check and pidfd_open
  }
  if (absl::Status allowed = internal::SignalPidfd(*pidfd, record.pid, 0);
      !allowed.ok()) {
    if (absl::IsNotFound(allowed)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(refused_prefix, "not allowed to signal pid ", record.pid,
                     " (uid ", record.uid, "): ", allowed.message()));
  }
  if (absl::Status sent = internal::SignalPidfd(*pidfd, record.pid, SIGTERM);
      !sent.ok() && !absl::IsNotFound(sent)) {
    return sent;
  }
  if (internal::WaitForExit(*pidfd, options.grace_period)) {
    return absl::OkStatus();
  }
  if (absl::Status sent = internal::SignalPidfd(*pidfd, record.pid, SIGKILL);
      !sent.ok() && !absl::IsNotFound(sent)) {
    return sent;
  }
  if (internal::WaitForExit(*pidfd, kKillWait)) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(
      location.display_name, ": pid ", record.pid, " did not exit within ",
      absl::FormatDuration(kKillWait), " of SIGKILL"));
}

// The refusal when the replaced holder has exited but the lock is still
// held a grace period later (`status` says so): by processes it left
// running (which are not signalled: only the process an owner record names
// is), or by another copy that came first. One sentence, describing who
// holds it now.
absl::Status ReplacedButHeld(const Location& location,
                             const OwnerRecord& replaced,
                             const absl::Status& status) {
  absl::StatusOr<Inspection> inspection = InspectLockFile(location.lock_path);
  std::optional<InstanceInfo> holder;
  if (inspection.ok()) holder = HolderFrom(*inspection);
  if (!holder.has_value()) {  // released meanwhile, or not readable
    return absl::UnavailableError(absl::StrCat(
        status.message(), "; pid ", replaced.pid, " was stopped to replace it"));
  }
  const bool inherited = holder->inherited_from_pid != 0 &&
                         (holder->inherited_from_pid == replaced.pid ||
                          holder->inherited_from_pid == replaced.locker_pid);
  return absl::UnavailableError(absl::StrCat(
      Describe(location, *holder), "; not replacing it: stopped pid ",
      replaced.pid,
      inherited ? ", but processes it left running keep the lock it passed "
                  "on to them, and only a process that an owner record "
                  "names is signalled"
                : ", but another copy took the lock meanwhile"));
}

absl::StatusOr<ScopedFileLock> LockReplacing(const Location& location,
                                             const LockOptions& base,
                                             const InstanceOptions& options) {
  LockOptions try_once = base;
  try_once.timeout = absl::ZeroDuration();
  for (int attempt = 0; attempt < kConflictAttempts; ++attempt) {
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::Acquire(location.lock_path, try_once);
    if (lock.ok() || !absl::IsUnavailable(lock.status())) return lock;
    absl::StatusOr<Inspection> inspection = InspectLockFile(location.lock_path);
    if (!inspection.ok()) return inspection.status();
    std::optional<InstanceInfo> holder = HolderFrom(*inspection);
    if (!holder.has_value()) continue;  // released meanwhile
    if (std::string why = WhyNotReplaceable(*inspection, *holder);
        !why.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          Describe(location, *holder),
          "; not replacing it: ", why));
    }
    if (absl::Status terminated =
            TerminateHolder(location, *holder, *inspection->record, options);
        !terminated.ok()) {
      return terminated;
    }
    // The holder is gone. Unless processes it left running keep the lock
    // (they inherited its descriptor), the kernel released it before the
    // pidfd became readable; wait a little in case a copy that started
    // meanwhile got there first and is about to exit too.
    absl::StatusOr<ScopedFileLock> after =
        LockWaiting(location, base, options.grace_period);
    if (after.ok() || (!absl::IsDeadlineExceeded(after.status()) &&
                       !absl::IsUnavailable(after.status()))) {
      return after;
    }
    return ReplacedButHeld(location, *inspection->record, after.status());
  }
  return absl::UnavailableError(absl::StrCat(
      location.display_name, " is already running (", location.lock_path,
      " is held, by a process that keeps changing)"));
}

// Everything a successful acquisition produced.
struct Acquired {
  Acquired(std::string name, ScopedFileLock lock)
      : name(std::move(name)), lock(std::move(lock)) {}

  std::string name;  // the instance name, or the lock path
  ScopedFileLock lock;
  internal::LockFilePlace place = internal::LockFilePlace::kElsewhere;
  bool shared = false;  // InstanceOptions::shared: no owner record
  // What UpdateRecord() keeps from the first record: the command line
  // (InstanceOptions::recorded_command_line, or when that is empty the
  // identity's), the recorded executable if one was given, the locker (the
  // identity's pid) and the time. The identity is the acquiring process's,
  // never freed.
  std::vector<std::string> recorded_command_line;
  std::string recorded_executable;
  const internal::SelfIdentity* identity = nullptr;
  absl::Time acquired_at;
  std::unique_ptr<internal::MessageListener> listener;
  bool callback_mode = false;
};

// InstanceMessage is the public type, ChannelMessage the channel's; the
// fields are the same.
InstanceMessage FromChannel(const internal::ChannelMessage& message) {
  InstanceMessage converted;
  converted.arguments = message.arguments;
  converted.working_directory = message.working_directory;
  converted.payload = message.payload;
  converted.sender_pid = message.sender_pid;
  converted.sender_uid = message.sender_uid;
  return converted;
}

internal::ChannelMessage ToChannel(const InstanceMessage& message) {
  internal::ChannelMessage converted;
  converted.arguments = message.arguments;
  converted.working_directory = message.working_directory;
  converted.payload = message.payload;
  return converted;
}

absl::StatusOr<std::unique_ptr<internal::MessageListener>> StartListening(
    const Location& location, const InstanceOptions& options) {
  internal::ListenerOptions listener;
  listener.name = location.display_name;
  listener.socket_path = internal::SocketPathFor(location.lock_path);
  listener.shared = location.shared;
  listener.accept_other_users = options.accept_other_users;
  listener.max_message_bytes = options.max_message_bytes;
  listener.io_timeout = options.message_timeout;
  if (options.on_message) {
    listener.on_message =
        [on_message = options.on_message](const internal::ChannelMessage& m) {
          return on_message(FromChannel(m));
        };
  }
  return internal::MessageListener::Start(std::move(listener));
}

// Every instance lock file in `directory`, with its holder.
absl::StatusOr<std::vector<ListedInstance>> ListDirectory(
    const internal::InstanceDirectory& directory) {
  DIR* listing = opendir(directory.path.c_str());
  if (listing == nullptr) {
    return PosixError(absl::StrCat(directory.path, ": opendir"), errno);
  }
  absl::Cleanup close_listing = [listing] { closedir(listing); };
  std::vector<ListedInstance> instances;
  for (;;) {
    errno = 0;
    const struct dirent* entry = readdir(listing);
    if (entry == nullptr) {
      if (errno != 0) {
        return PosixError(absl::StrCat(directory.path, ": readdir"), errno);
      }
      break;
    }
    std::optional<std::string> name =
        internal::InstanceNameOf(directory, entry->d_name);
    if (!name.has_value()) continue;
    ListedInstance listed;
    listed.name = *std::move(name);
    listed.lock_path = internal::LockPathIn(directory, listed.name);
    absl::StatusOr<Inspection> inspection = InspectLockFile(listed.lock_path);
    // Not a regular file (something planted), or unreadable: not a lock.
    if (!inspection.ok()) continue;
    listed.holder = HolderFrom(*inspection);
    instances.push_back(std::move(listed));
  }
  return instances;
}

// Looks for a copy that an earlier onlyone build started, which holds the
// same lock where that build kept it (LegacyLockPaths()): OK when
// none does, or once it has exited (kWait); otherwise why not. Called while
// holding our own lock, only while our lock file holds no owner record yet,
// that is until this build's first copy has run: see "Where the locks live"
// in docs/design.md for why that suffices.
absl::Status CheckLegacyLocks(const Location& location,
                              const InstanceOptions& options,
                              const LockOptions& lock_options,
                              absl::Time deadline) {
  for (const std::string& path : LegacyLockPaths(location)) {
    absl::StatusOr<Inspection> inspection = InspectLockFile(path);
    // Not a lock file (something else is there) or not ours to read: no
    // copy of ours can hold it.
    if (!inspection.ok()) continue;
    std::optional<InstanceInfo> holder = HolderFrom(*inspection);
    if (!holder.has_value()) continue;
    const std::string refusal = absl::StrCat(
        Describe(location, *holder), ", in ", path,
        " where an earlier onlyone build keeps this lock");
    if (options.on_conflict != ConflictPolicy::kWait) {
      return absl::UnavailableError(refusal);
    }
    LockOptions wait = lock_options;
    wait.timeout = std::max(deadline - absl::Now(), absl::ZeroDuration());
    absl::StatusOr<ScopedFileLock> legacy =
        ScopedFileLock::Acquire(path, wait);
    if (absl::IsDeadlineExceeded(legacy.status())) {
      return absl::DeadlineExceededError(absl::StrCat(
          refusal, "; gave up after waiting ",
          absl::FormatDuration(options.wait_timeout), " for it to exit"));
    }
    if (!legacy.ok()) return legacy.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<Acquired> AcquireAt(const Location& location,
                                   const InstanceOptions& options) {
  const absl::Time deadline = options.wait_timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : absl::Now() + options.wait_timeout;
  LockOptions lock_options;
  lock_options.mode = options.shared ? LockMode::kShared : LockMode::kExclusive;
  lock_options.file_mode = location.file_mode;
  lock_options.writable = location.writable;
  lock_options.inheritable = options.inheritable;
  absl::StatusOr<ScopedFileLock> lock;
  switch (options.on_conflict) {
    case ConflictPolicy::kFail:
      lock = LockFailAtOnce(location, lock_options);
      break;
    case ConflictPolicy::kWait:
      lock = LockWaiting(location, lock_options, options.wait_timeout);
      break;
    case ConflictPolicy::kReplace:
      lock = LockReplacing(location, lock_options, options);
      break;
  }
  if (!lock.ok()) return lock.status();
  if (lock->status_when_locked().st_size == 0) {
    if (absl::Status legacy =
            CheckLegacyLocks(location, options, lock_options, deadline);
        !legacy.ok()) {
      return legacy;  // the lock's destructor releases it
    }
  }

  // Only now, holding the lock, does this process say who it is.
  const internal::SelfIdentity& self = internal::CachedSelfIdentity();
  const absl::Time acquired_at = absl::Now();
  if (!options.shared) {
    absl::StatusOr<bool> written = internal::WriteOwnerRecord(
        lock->fd(), location.lock_path,
        OwnerRecordFor(self, location, options, acquired_at),
        lock->status_when_locked(), location.place);
    if (!written.ok()) return written.status();
  }

  Acquired acquired(location.display_name, *std::move(lock));
  acquired.place = location.place;
  acquired.shared = options.shared;
  acquired.recorded_command_line = options.recorded_command_line;
  acquired.recorded_executable = options.recorded_executable;
  acquired.identity = &self;
  acquired.acquired_at = acquired_at;
  if (options.listen) {
    // After the lock and the record: only the holder creates the socket.
    absl::StatusOr<std::unique_ptr<internal::MessageListener>> listener =
        StartListening(location, options);
    if (!listener.ok()) return listener.status();
    acquired.listener = *std::move(listener);
    acquired.callback_mode = static_cast<bool>(options.on_message);
  }
  return acquired;
}

}  // namespace

// ---------------------------------------------------------------------------

struct SingleInstance::State {
  explicit State(Acquired parts) : parts(std::move(parts)) {}

  Acquired parts;
  bool released = false;
};

absl::StatusOr<SingleInstance> SingleInstance::Acquire(
    absl::string_view name, const InstanceOptions& options) {
  if (absl::Status valid = ValidateOptions(name, options); !valid.ok()) {
    return valid;
  }
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  absl::StatusOr<Acquired> acquired = AcquireAt(*location, options);
  if (!acquired.ok()) return acquired.status();
  return SingleInstance(std::make_unique<State>(*std::move(acquired)));
}

absl::StatusOr<SingleInstance> SingleInstance::AcquireAtPath(
    absl::string_view lock_path, const InstanceOptions& options) {
  if (lock_path.empty()) {
    return absl::InvalidArgumentError("lock path is empty");
  }
  if (absl::Status valid = ValidateOptions(lock_path, options); !valid.ok()) {
    return valid;
  }
  absl::StatusOr<Acquired> acquired =
      AcquireAt(LocatePath(lock_path), options);
  if (!acquired.ok()) return acquired.status();
  return SingleInstance(std::make_unique<State>(*std::move(acquired)));
}

absl::StatusOr<std::optional<InstanceInfo>> SingleInstance::Holder(
    absl::string_view name, const InstanceOptions& options) {
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  absl::StatusOr<std::optional<InstanceInfo>> holder =
      HolderAtPath(location->lock_path);
  if (!holder.ok() || holder->has_value()) return holder;
  // Free here: a copy of an earlier build may hold it where that build kept
  // it. Locations that are not lock files cannot hold it.
  for (const std::string& legacy : LegacyLockPaths(*location)) {
    absl::StatusOr<std::optional<InstanceInfo>> old = HolderAtPath(legacy);
    if (old.ok() && old->has_value()) return old;
  }
  return holder;
}

absl::StatusOr<std::optional<InstanceInfo>> SingleInstance::HolderAtPath(
    absl::string_view lock_path) {
  if (lock_path.empty()) {
    return absl::InvalidArgumentError("lock path is empty");
  }
  absl::StatusOr<Inspection> inspection =
      InspectLockFile(std::string(lock_path));
  if (!inspection.ok()) return inspection.status();
  return HolderFrom(*inspection);
}

absl::StatusOr<std::string> SingleInstance::LockPath(
    absl::string_view name, const InstanceOptions& options) {
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  return location->lock_path;
}

absl::StatusOr<std::vector<ListedInstance>> SingleInstance::List(
    const InstanceOptions& options) {
  const internal::DirectoryKind kind = KindFor(options);
  absl::StatusOr<internal::InstanceDirectory> directory =
      internal::ResolveInstanceDirectory(kind, options.directory);
  if (!directory.ok()) return directory.status();
  absl::StatusOr<std::vector<ListedInstance>> instances =
      ListDirectory(*directory);
  if (!instances.ok()) return instances.status();
  // Copies of an earlier build that still run, where that build kept its
  // locks, unless the same name is held here too.
  for (const internal::InstanceDirectory& legacy :
       internal::LegacyDirectories(kind, directory->euid)) {
    if (legacy.path == directory->path) continue;
    absl::StatusOr<std::vector<ListedInstance>> old = ListDirectory(legacy);
    if (!old.ok()) continue;  // missing or unreadable: nothing runs there
    for (ListedInstance& listed : *old) {
      if (!listed.holder.has_value()) continue;
      auto same = std::find_if(instances->begin(), instances->end(),
                               [&](const ListedInstance& current) {
                                 return current.name == listed.name;
                               });
      if (same == instances->end()) {
        instances->push_back(std::move(listed));
      } else if (!same->holder.has_value()) {
        *same = std::move(listed);
      }
    }
  }
  std::sort(instances->begin(), instances->end(),
            [](const ListedInstance& a, const ListedInstance& b) {
              return a.name < b.name;
            });
  return instances;
}

absl::Status SingleInstance::ValidateName(absl::string_view name) {
  return internal::ValidateInstanceName(name);
}

std::string SingleInstance::DescribeRunning(absl::string_view name,
                                            const InstanceInfo& holder) {
  return absl::StrCat(internal::Printable(name), " is already running (",
                      absl::StrJoin(HolderDetails(holder), ", "), ")");
}

std::string SingleInstance::DescribeHeld(absl::string_view lock_path,
                                         const InstanceInfo& holder) {
  std::vector<std::string> details = HolderDetails(holder);
  const std::string who = details.front();
  details.erase(details.begin());
  return details.empty()
             ? absl::StrCat(internal::Printable(lock_path), " is held by ", who)
             : absl::StrCat(internal::Printable(lock_path), " is held by ", who,
                            " (",
                            absl::StrJoin(details, ", "), ")");
}

absl::StatusOr<std::string> SingleInstance::Send(
    absl::string_view name, const InstanceMessage& message,
    const InstanceOptions& options) {
  if (absl::Status valid = internal::ValidateInstanceName(name); !valid.ok()) {
    return valid;
  }
  if (absl::Status valid = ValidateMessagingOptions(name, options);
      !valid.ok()) {
    return valid;
  }
  absl::StatusOr<Location> location = Locate(name, options);
  if (!location.ok()) return location.status();
  internal::SendTarget target;
  target.name = location->display_name;
  target.socket_path = internal::SocketPathFor(location->lock_path);
  target.lock_path = location->lock_path;
  target.max_message_bytes = options.max_message_bytes;
  target.timeout = options.message_timeout;
  return internal::SendMessage(target, ToChannel(message));
}

SingleInstance::SingleInstance(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

SingleInstance::SingleInstance(SingleInstance&&) noexcept = default;

SingleInstance& SingleInstance::operator=(SingleInstance&& other) noexcept {
  if (this != &other) {
    Release().IgnoreError();  // as in the destructor
    state_ = std::move(other.state_);
  }
  return *this;
}

SingleInstance::~SingleInstance() { Release().IgnoreError(); }

absl::Status SingleInstance::Release() {
  if (state_ == nullptr || state_->released) return absl::OkStatus();
  state_->released = true;
  absl::Status status;
  if (state_->parts.listener != nullptr) {
    // Only the holder removes the socket, and before it lets go of the lock:
    // a fork()ed child or a parent that handed the lock off leaves it.
    status = state_->parts.listener->Stop(
        /*remove_socket=*/state_->parts.lock.held());
    if (state_->parts.listener->IsForkedCopy()) {
      state_->parts.listener.release();  // NOLINT: see IsForkedCopy()
    } else {
      state_->parts.listener.reset();
    }
  }
  absl::Status released = state_->parts.lock.Release();
  if (status.ok()) status = released;
  return status;
}

ScopedFileLock& SingleInstance::lock() {
  ABSL_RAW_CHECK(state_ != nullptr,
                 "SingleInstance::lock() on a moved-from object");
  return state_->parts.lock;
}

absl::Status SingleInstance::UpdateRecord() {
  if (state_ != nullptr && state_->parts.shared) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_->parts.name,
        ": a shared lock has no owner record (many copies hold it at once)"));
  }
  if (state_ == nullptr || state_->released || !state_->parts.lock.held()) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_ == nullptr ? "SingleInstance" : state_->parts.name,
        ": this process does not hold the lock, so it may not write its "
        "owner record"));
  }
  const Acquired& parts = state_->parts;
  OwnerRecord record = RecordForThisProcess(
      geteuid(), parts.recorded_command_line, parts.recorded_executable);
  if (parts.recorded_command_line.empty()) {
    // The command line as first recorded, even if the process has renamed
    // itself since (setproctitle after daemonizing).
    record.command_line = parts.identity->record.command_line;
    record.command_line_truncated =
        parts.identity->record.command_line_truncated;
  }
  // The kernel keeps listing the process that took the lock.
  record.locker_pid = parts.identity->record.pid;
  record.acquired_at = parts.acquired_at;
  absl::StatusOr<bool> written = internal::WriteOwnerRecord(
      parts.lock.fd(), parts.lock.path(), record, parts.place);
  if (!written.ok()) return written.status();
  return absl::OkStatus();
}

int SingleInstance::message_fd() const {
  if (state_ == nullptr || state_->parts.listener == nullptr) return -1;
  return state_->parts.listener->message_fd();
}

absl::StatusOr<std::optional<InstanceMessage>> SingleInstance::TakeMessage() {
  if (state_ == nullptr || state_->parts.listener == nullptr ||
      state_->parts.callback_mode) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_ == nullptr ? "SingleInstance" : state_->parts.name,
        ": not listening in pollable mode (set listen without on_message)"));
  }
  std::optional<internal::ChannelMessage> message =
      state_->parts.listener->Take();
  if (!message.has_value()) return std::nullopt;
  return FromChannel(*message);
}

absl::Status SingleInstance::Reply(absl::string_view reply) {
  if (state_ == nullptr || state_->parts.listener == nullptr ||
      state_->parts.callback_mode) {
    return absl::FailedPreconditionError(absl::StrCat(
        state_ == nullptr ? "SingleInstance" : state_->parts.name,
        ": not listening in pollable mode (set listen without on_message)"));
  }
  return state_->parts.listener->Reply(reply);
}

}  // namespace onlyone
