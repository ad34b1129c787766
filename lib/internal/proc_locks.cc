#include "onlyone/internal/proc_locks.h"

#include <sys/sysmacros.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/small_file.h"
#include "onlyone/internal/printable.h"

namespace onlyone::internal {
namespace {

// Parses "MAJ:MIN:INODE" where the device numbers are hexadecimal.
bool ParseFileId(absl::string_view field, dev_t* device, ino_t* inode) {
  std::vector<absl::string_view> parts = absl::StrSplit(field, ':');
  if (parts.size() != 3) return false;
  uint32_t major_number, minor_number;
  uint64_t inode_number;
  if (!absl::SimpleHexAtoi(parts[0], &major_number) ||
      !absl::SimpleHexAtoi(parts[1], &minor_number) ||
      !absl::SimpleAtoi(parts[2], &inode_number)) {
    return false;
  }
  *device = makedev(major_number, minor_number);
  *inode = static_cast<ino_t>(inode_number);
  return true;
}

// /proc files are read whole; /proc/locks lists every lock of the machine.
constexpr size_t kMaxProcFileBytes = 64 << 20;

std::string ReadProcFile(const std::string& path,
                         size_t limit = kMaxProcFileBytes) {
  std::string text;
  if (!ReadSmallFile(path, limit, &text)) text.clear();
  return text;
}

// The flock(2) locks on the file (device, inode) that process `pid` holds
// through its descriptors, from its /proc/PID/fdinfo ("lock:" lines, which
// list the locks of each descriptor's open file description); only the
// first found with `first_only`. Reads fdinfo alone, never the files the
// descriptors name (a stat(2) could hang on a dead NFS mount). nullopt when
// /proc does not let us see the process's descriptors; empty when it has
// none on the file, or has exited.
std::optional<std::vector<FlockHolder>> FlocksHeldBy(pid_t pid, dev_t device,
                                                     ino_t inode,
                                                     bool first_only) {
  std::vector<FlockHolder> locks;
  const std::string fdinfo = absl::StrCat("/proc/", pid, "/fdinfo");
  DIR* listing = opendir(fdinfo.c_str());
  if (listing == nullptr) {
    if (errno == ENOENT) return locks;  // exited
    return std::nullopt;
  }
  absl::Cleanup close_listing = [listing] { closedir(listing); };
  while (const struct dirent* entry = readdir(listing)) {
    if (entry->d_name[0] == '.') continue;
    const std::string text =
        ReadProcFile(absl::StrCat(fdinfo, "/", entry->d_name));
    for (const FlockHolder& lock : ParseFlockHolders(text, device, inode)) {
      locks.push_back(lock);
      if (first_only) return locks;
    }
  }
  return locks;
}

}  // namespace

std::vector<FlockHolder> ParseFlockHolders(absl::string_view proc_locks_text,
                                           dev_t device, ino_t inode) {
  // A line is "ID: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF"; waiters
  // are listed as "ID: -> FLOCK ..." and are skipped.
  std::vector<FlockHolder> holders;
  for (absl::string_view line : absl::StrSplit(proc_locks_text, '\n')) {
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    // fdinfo's "lock:\t1: FLOCK ..." is the same line behind a label.
    if (!fields.empty() && fields[0] == "lock:") fields.erase(fields.begin());
    if (fields.size() < 6 || fields[1] != "FLOCK") continue;
    dev_t line_device;
    ino_t line_inode;
    if (!ParseFileId(fields[5], &line_device, &line_inode) ||
        line_device != device || line_inode != inode) {
      continue;
    }
    FlockHolder holder;
    if (!absl::SimpleAtoi(fields[4], &holder.pid)) continue;
    holder.exclusive = fields[3] == "WRITE";
    holders.push_back(holder);
  }
  return holders;
}

std::vector<FlockHolder> FlockHolders(dev_t device, ino_t inode) {
  return ParseFlockHolders(ReadProcFile("/proc/locks"), device, inode);
}

std::optional<std::vector<FlockHolder>> ReadFlockHolders(dev_t device,
                                                         ino_t inode) {
  std::string text;
  if (!ReadSmallFile("/proc/locks", kMaxProcFileBytes, &text)) {
    return std::nullopt;
  }
  return ParseFlockHolders(text, device, inode);
}

std::optional<bool> ProcessHoldsFlockOn(pid_t pid, dev_t device,
                                        ino_t inode) {
  std::optional<std::vector<FlockHolder>> locks =
      FlocksHeldBy(pid, device, inode, /*first_only=*/true);
  if (!locks.has_value()) return std::nullopt;
  return !locks->empty();
}

bool InInitialPidNamespace() {
  // The initial namespaces have fixed inode numbers (PROC_PID_INIT_INO in
  // the kernel's include/linux/proc_ns.h).
  constexpr ino_t kInitialPidNamespaceInode = 0xEFFFFFFC;
  static const bool initial = [] {
    struct stat namespace_file;
    return stat("/proc/self/ns/pid", &namespace_file) == 0 &&
           namespace_file.st_ino == kInitialPidNamespaceInode;
  }();
  return initial;
}

std::vector<FlockHoldingProcess> ProcessesHoldingFlockOn(dev_t device,
                                                         ino_t inode) {
  std::vector<FlockHoldingProcess> processes;
  DIR* listing = opendir("/proc");
  if (listing == nullptr) return processes;
  absl::Cleanup close_listing = [listing] { closedir(listing); };
  while (const struct dirent* entry = readdir(listing)) {
    pid_t pid;
    if (!absl::SimpleAtoi(entry->d_name, &pid) || pid <= 0) continue;
    std::optional<std::vector<FlockHolder>> locks =
        FlocksHeldBy(pid, device, inode, /*first_only=*/false);
    if (!locks.has_value() || locks->empty()) continue;
    FlockHoldingProcess& process = processes.emplace_back();
    process.pid = pid;
    for (const FlockHolder& lock : *locks) {
      if (std::find(process.locker_pids.begin(), process.locker_pids.end(),
                    lock.pid) == process.locker_pids.end()) {
        process.locker_pids.push_back(lock.pid);
      }
    }
  }
  return processes;
}

std::vector<std::string> ProcessCommandLine(pid_t pid, size_t limit) {
  std::string text =
      ReadProcFile(absl::StrCat("/proc/", pid, "/cmdline"), limit);
  if (!text.empty() && text.back() == '\0') text.pop_back();
  if (text.empty()) return {};
  return absl::StrSplit(text, '\0');
}

std::string ProcessName(pid_t pid) {
  std::string name = ReadProcFile(absl::StrCat("/proc/", pid, "/comm"));
  if (!name.empty() && name.back() == '\n') name.pop_back();
  return name;
}

std::string DescribeHolders(const std::vector<FlockHolder>& holders) {
  std::vector<std::string> names;
  for (const FlockHolder& holder : holders) {
    names.push_back(holder.pid == 0 ? "" : ProcessName(holder.pid));
  }
  return DescribeHolders(holders, names);
}

std::string DescribeHolders(const std::vector<FlockHolder>& holders,
                            const std::vector<std::string>& names) {
  if (holders.empty()) return "";
  std::vector<std::string> parts;
  for (size_t i = 0; i < holders.size(); ++i) {
    const FlockHolder& holder = holders[i];
    if (holder.pid == 0) {
      parts.push_back("0 (a process outside this pid namespace)");
      continue;
    }
    // Any process names itself (prctl(PR_SET_NAME), argv[0]): the name may
    // carry terminal escapes into the message.
    const std::string& name = names[i];
    parts.push_back(name.empty()
                        ? absl::StrCat(holder.pid)
                        : absl::StrCat(holder.pid, " (", Printable(name), ")"));
  }
  return absl::StrCat(holders.size() == 1 ? "pid " : "pids ",
                      absl::StrJoin(parts, ", "));
}

}  // namespace onlyone::internal
