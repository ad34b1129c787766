#include "lib/internal/proc_locks.h"

#include <sys/sysmacros.h>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lib/internal/small_file.h"
#include "lib/internal/printable.h"

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

std::string ReadProcFile(const std::string& path) {
  std::string text;
  if (!ReadSmallFile(path, kMaxProcFileBytes, &text)) text.clear();
  return text;
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

bool ProcessHoldsFlockOn(pid_t pid, dev_t device, ino_t inode) {
  const std::string fdinfo = absl::StrCat("/proc/", pid, "/fdinfo");
  DIR* listing = opendir(fdinfo.c_str());
  if (listing == nullptr) return false;
  absl::Cleanup close_listing = [listing] { closedir(listing); };
  while (const struct dirent* entry = readdir(listing)) {
    if (entry->d_name[0] == '.') continue;
    const std::string text =
        ReadProcFile(absl::StrCat(fdinfo, "/", entry->d_name));
    if (!ParseFlockHolders(text, device, inode).empty()) return true;
  }
  return false;
}

std::string ProcessName(pid_t pid) {
  std::string name = ReadProcFile(absl::StrCat("/proc/", pid, "/comm"));
  if (!name.empty() && name.back() == '\n') name.pop_back();
  return name;
}

std::string DescribeHolders(const std::vector<FlockHolder>& holders) {
  if (holders.empty()) return "";
  std::vector<std::string> parts;
  for (const FlockHolder& holder : holders) {
    if (holder.pid == 0) {
      parts.push_back("0 (a process outside this pid namespace)");
      continue;
    }
    // Any process names itself (prctl(PR_SET_NAME), argv[0]): the name may
    // carry terminal escapes into the message.
    const std::string name = ProcessName(holder.pid);
    parts.push_back(name.empty()
                        ? absl::StrCat(holder.pid)
                        : absl::StrCat(holder.pid, " (", Printable(name), ")"));
  }
  return absl::StrCat(holders.size() == 1 ? "pid " : "pids ",
                      absl::StrJoin(parts, ", "));
}

}  // namespace onlyone::internal
