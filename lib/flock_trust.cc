#include "onlyone/flock_trust.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include <cerrno>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/small_file.h"

namespace onlyone {
namespace {

// The directory a path that does not exist yet would be made in.
std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// mountinfo escapes space, tab, newline and backslash in paths as \ooo.
std::string UnescapeMountPath(absl::string_view escaped) {
  const auto octal = [](char c) { return c >= '0' && c <= '7'; };
  std::string path;
  for (size_t i = 0; i < escaped.size(); ++i) {
    if (escaped[i] == '\\' && i + 3 < escaped.size() &&
        octal(escaped[i + 1]) &&
        octal(escaped[i + 2]) && octal(escaped[i + 3])) {
      path.push_back(static_cast<char>((escaped[i + 1] - '0') * 64 +
                                       (escaped[i + 2] - '0') * 8 +
                                       (escaped[i + 3] - '0')));
      i += 3;
    } else {
      path.push_back(escaped[i]);
    }
  }
  return path;
}

bool HasOption(absl::string_view options, absl::string_view option) {
  for (absl::string_view one : absl::StrSplit(options, ',')) {
    if (one == option) return true;
  }
  return false;
}

// Why flock(2) cannot be trusted on a filesystem of `type` whose per-mount
// and superblock options are `options`; "" when it can.
std::string Distrust(absl::string_view type, absl::string_view options) {
  if (type == "fuse" || type == "fuseblk" || absl::StartsWith(type, "fuse.") ||
      type == "virtiofs") {
    return absl::StrCat(
        "a FUSE filesystem (", type,
        "): the kernel keeps flock(2) locks for this machine unless the "
        "filesystem's daemon implements them, so processes elsewhere that "
        "share the data are not excluded");
  }
  if (type == "nfs" || type == "nfs4") {
    // nolock first: it implies local_lock=all, and is what the user typed.
    for (absl::string_view option :
         {"nolock", "local_lock=flock", "local_lock=all"}) {
      if (HasOption(options, option)) {
        return absl::StrCat("an NFS mount with ", option,
                            ": flock(2) locks are local to this client and "
                            "exclude no other client");
      }
    }
  }
  if ((type == "cifs" || type == "smb3") && HasOption(options, "nobrl")) {
    return absl::StrCat("a ", type,
                        " mount with nobrl: locks are not sent to the server "
                        "and exclude no other client");
  }
  if (type == "lustre" && HasOption(options, "localflock")) {
    return "a Lustre mount with localflock: flock(2) locks are local to this "
           "node";
  }
  if ((type == "gfs2" || type == "ocfs2") &&
      HasOption(options, "localflocks")) {
    return absl::StrCat("a ", type,
                        " mount with localflocks: flock(2) locks are local "
                        "to this node");
  }
  return "";
}

struct ParsedLine {
  FlockTrust trust;
  dev_t device = 0;
};

std::optional<ParsedLine> ParseLine(absl::string_view line) {
  // ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE
  // SOURCE SUPER_OPTIONS
  const size_t separator = line.find(" - ");
  if (separator == absl::string_view::npos) return std::nullopt;
  const std::vector<absl::string_view> before =
      absl::StrSplit(line.substr(0, separator), ' ', absl::SkipEmpty());
  const std::vector<absl::string_view> after =
      absl::StrSplit(line.substr(separator + 3), ' ', absl::SkipEmpty());
  if (before.size() < 6 || after.size() < 2) return std::nullopt;
  const std::vector<absl::string_view> numbers = absl::StrSplit(before[2], ':');
  unsigned int major_number, minor_number;
  if (numbers.size() != 2 || !absl::SimpleAtoi(numbers[0], &major_number) ||
      !absl::SimpleAtoi(numbers[1], &minor_number)) {
    return std::nullopt;
  }
  ParsedLine parsed;
  parsed.device = makedev(major_number, minor_number);
  parsed.trust.filesystem_type = std::string(after[0]);
  parsed.trust.mount_point = UnescapeMountPath(before[4]);
  const std::string options = absl::StrCat(
      before[5], ",", after.size() >= 3 ? after[2] : absl::string_view());
  parsed.trust.reason = Distrust(after[0], options);
  parsed.trust.trusted = parsed.trust.reason.empty();
  return parsed;
}

bool IsUnder(absl::string_view path, absl::string_view mount_point) {
  if (mount_point == "/") return absl::StartsWith(path, "/");
  return absl::StartsWith(path, mount_point) &&
         (path.size() == mount_point.size() ||
          path[mount_point.size()] == '/');
}

}  // namespace

std::optional<FlockTrust> FlockTrustOfMountInfoLine(absl::string_view line) {
  std::optional<ParsedLine> parsed = ParseLine(line);
  if (!parsed.has_value()) return std::nullopt;
  return std::move(parsed->trust);
}

std::optional<FlockTrust> FlockTrustInMountInfo(
    absl::string_view mountinfo, dev_t device,
    absl::string_view canonical_path) {
  std::optional<FlockTrust> best;
  size_t best_length = 0;
  bool best_is_prefix = false;
  for (absl::string_view line :
       absl::StrSplit(mountinfo, '\n', absl::SkipEmpty())) {
    std::optional<ParsedLine> parsed = ParseLine(line);
    if (!parsed.has_value() || parsed->device != device) continue;
    const bool prefix = IsUnder(canonical_path, parsed->trust.mount_point);
    const size_t length = parsed->trust.mount_point.size();
    // Later lines are mounted over earlier ones: prefer them on ties.
    if (!best.has_value() || (prefix && (!best_is_prefix || length >= best_length)) ||
        (!prefix && !best_is_prefix)) {
      best = std::move(parsed->trust);
      best_length = length;
      best_is_prefix = prefix;
    }
  }
  return best;
}

bool FlockTrustNeedsChecking(absl::string_view path) {
  // statfs(2)'s f_type of each kind FlockTrustOfMountInfoLine() may judge
  // untrusted (fuse, fuseblk and virtiofs all report FUSE's).
  constexpr __fsword_t kMayBeUntrusted[] = {
      0x65735546,  // FUSE_SUPER_MAGIC
      0x6969,      // NFS_SUPER_MAGIC
      0xFF534D42,  // CIFS_SUPER_MAGIC
      0xFE534D42,  // SMB2_SUPER_MAGIC
      0x0BD00BD0,  // Lustre
      0x01161970,  // GFS2_MAGIC
      0x7461636F,  // OCFS2_SUPER_MAGIC
  };
  std::string target(path);
  struct statfs filesystem;
  if (statfs(target.c_str(), &filesystem) != 0) {
    if (errno != ENOENT) return true;
    target = DirectoryOf(target);
    if (statfs(target.c_str(), &filesystem) != 0) return true;
  }
  for (__fsword_t kind : kMayBeUntrusted) {
    if (filesystem.f_type == kind) return true;
  }
  return false;
}

absl::StatusOr<FlockTrust> CheckFlockTrust(absl::string_view path) {
  std::string target(path);
  struct stat file;
  if (stat(target.c_str(), &file) != 0) {
    const int error_number = errno;
    if (error_number != ENOENT) {
      return internal::PosixError(absl::StrCat(path, ": stat"), error_number);
    }
    target = DirectoryOf(target);
    if (stat(target.c_str(), &file) != 0) {
      return internal::PosixError(
          absl::StrCat(path, ": stat of its directory ", target), errno);
    }
  }
  char canonical[PATH_MAX];
  if (realpath(target.c_str(), canonical) == nullptr) {
    return internal::PosixError(absl::StrCat(path, ": realpath"), errno);
  }
  std::string mountinfo;
  if (!internal::ReadSmallFile("/proc/self/mountinfo", 16 << 20, &mountinfo)) {
    return absl::InternalError(
        absl::StrCat(path, ": cannot read /proc/self/mountinfo"));
  }
  std::optional<FlockTrust> trust =
      FlockTrustInMountInfo(mountinfo, file.st_dev, canonical);
  if (!trust.has_value()) {
    return absl::InternalError(absl::StrCat(
        path, ": /proc/self/mountinfo lists no mount of device ",
        major(file.st_dev), ":", minor(file.st_dev)));
  }
  return *std::move(trust);
}

}  // namespace onlyone
