#include "lib/internal/instance_paths.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "lib/internal/posix_error.h"

namespace onlyone::internal {
namespace {

// Lock files directly in a runtime directory are "onlyone-NAME.lock".
constexpr absl::string_view kRuntimeFilePrefix = "onlyone-";
constexpr absl::string_view kLockFileSuffix = ".lock";

bool IsNameCharacter(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '-';
}

std::string DescribeCharacter(char c) {
  const unsigned char byte = static_cast<unsigned char>(c);
  if (byte > 0x20 && byte < 0x7f)
    return absl::StrCat("character '", std::string(1, c), "'");
  return absl::StrFormat("byte 0x%02x", byte);
}

std::string ModeString(mode_t mode) {
  return absl::StrFormat("%04o", mode & 07777);
}

// "DIRECTORY/NAME", without doubling the slash of "/".
std::string ChildPath(absl::string_view directory, absl::string_view name) {
  return absl::StrCat(directory == "/" ? "" : directory, "/", name);
}

// "/run/user/0/" -> "/run/user/0"; "/" stays "/".
std::string WithoutTrailingSlashes(absl::string_view path) {
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  return std::string(path);
}

absl::Status Unsafe(absl::string_view path, absl::string_view reason) {
  return absl::FailedPreconditionError(
      absl::StrCat("unsafe lock directory ", path, ": ", reason));
}

// A parent under which we create our own directory (/tmp,
// /run/lock): it must be owned by root (or, when `allow_own` is set, by us),
// and sticky if others may write to it, so that nobody else can rename or
// remove what we create in it. stat(2) follows symlinks here: /var/lock is
// commonly a root-owned symlink to /run/lock.
absl::Status CheckTrustedParent(const std::string& path, bool allow_own,
                                uid_t euid, struct stat* info) {
  if (stat(path.c_str(), info) != 0) {
    return PosixError(absl::StrCat(path, ": stat"), errno);
  }
  if (!S_ISDIR(info->st_mode)) return Unsafe(path, "not a directory");
  if (info->st_uid != 0 && !(allow_own && info->st_uid == euid)) {
    return Unsafe(
        path, absl::StrCat("owned by uid ", info->st_uid,
                           allow_own ? ", neither root nor us" : ", not root"));
  }
  if ((info->st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
      (info->st_mode & S_ISVTX) == 0) {
    return Unsafe(path, absl::StrCat("mode ", ModeString(info->st_mode),
                                     ": writable by others but not sticky"));
  }
  return absl::OkStatus();
}

// Opens a directory we just created, without following a symlink that might
// have replaced it, for the re-check.
absl::StatusOr<int> OpenCreatedDirectory(const std::string& path,
                                         struct stat* info) {
  const int fd =
      open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return PosixError(absl::StrCat(path, ": open"), errno);
  if (fstat(fd, info) != 0) {
    const int error_number = errno;
    close(fd);
    return PosixError(absl::StrCat(path, ": fstat"), error_number);
  }
  return fd;
}

// Makes sure `path` is a directory that passes `check`, creating it if
// missing: mkdir 0700, re-check through a descriptor that cannot follow a
// symlink, and only then fchmod to `mode` if the new directory is ours.
// `refuse_creation`, when not empty, is the error for a missing directory
// we may not create.
absl::Status EnsureDirectory(
    const std::string& path, uid_t euid, mode_t mode,
    const absl::Status& refuse_creation,
    absl::FunctionRef<absl::Status(const struct stat&)> check) {
  // Two rounds: a directory created concurrently by another process
  // (EEXIST) is checked like any existing one.
  for (int round = 0; round < 2; ++round) {
    struct stat info;
    if (lstat(path.c_str(), &info) == 0) return check(info);
    if (errno != ENOENT)
      return PosixError(absl::StrCat(path, ": lstat"), errno);
    if (!refuse_creation.ok()) return refuse_creation;
    if (mkdir(path.c_str(), 0700) != 0) {
      if (errno == EEXIST) continue;
      return PosixError(absl::StrCat(path, ": mkdir"), errno);
    }
    absl::StatusOr<int> fd = OpenCreatedDirectory(path, &info);
    if (!fd.ok()) return fd.status();
    absl::Cleanup close_fd = [fd = *fd] { close(fd); };
    // The umask may have narrowed mkdir's mode, and a shared directory is
    // made writable by others only now, after the re-check showed it is ours.
    if (info.st_uid == euid && (info.st_mode & 07777) != mode) {
      if (fchmod(*fd, mode) != 0) {
        return PosixError(absl::StrCat(path, ": fchmod"), errno);
      }
      info.st_mode = (info.st_mode & ~07777) | mode;
    }
    return check(info);
  }
  return absl::FailedPreconditionError(
      absl::StrCat(path, ": appeared and disappeared while being created"));
}

// Makes sure `path` is a private directory, creating it (0700) if missing.
absl::Status EnsurePrivateDirectory(const std::string& path, uid_t euid) {
  return EnsureDirectory(path, euid, 0700, absl::OkStatus(),
                         [&](const struct stat& info) {
                           return CheckPrivateDirectoryOf(path, info, euid);
                         });
}

// Makes sure `path` is a shared directory, creating it (01777, like /tmp:
// everyone may create lock files, nobody may remove another user's) if
// missing and we are root. Only root creates it: see the header.
absl::Status EnsureSharedDirectory(const std::string& path, uid_t euid) {
  const absl::Status refuse_creation =
      euid == 0 ? absl::OkStatus()
                : absl::FailedPreconditionError(absl::StrCat(
                      "per-machine lock directory ", path,
                      " does not exist, and only root may create it (one "
                      "owned by an ordinary user would let that user remove "
                      "other users' locks): run a per-machine onlyone command "
                      "as root once, or `install -d -m 1777 ",
                      path, "`"));
  return EnsureDirectory(
      path, euid, 01777, refuse_creation,
      [&](const struct stat& info) { return CheckSharedDirectory(path, info); });
}

// The runtime directory if it passes the private checks, else "".
std::string SafeRuntimeDirectory(uid_t euid) {
  const char* from_env = std::getenv("XDG_RUNTIME_DIR");
  const std::string runtime = from_env != nullptr && from_env[0] == '/'
                                  ? WithoutTrailingSlashes(from_env)
                                  : absl::StrCat("/run/user/", euid);
  struct stat info;
  if (lstat(runtime.c_str(), &info) != 0) return "";
  if (!CheckPrivateDirectoryOf(runtime, info, euid).ok()) return "";
  return runtime;
}

// The runtime directory itself when it is safe (file names prefixed, since
// other programs keep files there too), else our own directory under /tmp.
absl::StatusOr<InstanceDirectory> UserDirectory(uid_t euid) {
  if (std::string runtime = SafeRuntimeDirectory(euid); !runtime.empty()) {
    return InstanceDirectory{std::move(runtime),
                             std::string(kRuntimeFilePrefix),
                             /*shared=*/false, euid};
  }
  // Not $TMPDIR: it differs between a user's processes (build tools and
  // test runners set it), and two copies must always find the same lock.
  constexpr char kParent[] = "/tmp";
  struct stat info;
  if (absl::Status trusted =
          CheckTrustedParent(kParent, /*allow_own=*/true, euid, &info);
      !trusted.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no safe directory for per-user locks (no usable runtime directory; ",
        trusted.message(), ")"));
  }
  std::string directory = absl::StrCat(kParent, "/onlyone-", euid);
  if (absl::Status ensured = EnsurePrivateDirectory(directory, euid);
      !ensured.ok()) {
    return ensured;
  }
  return InstanceDirectory{std::move(directory), "", /*shared=*/false, euid};
}

absl::StatusOr<std::string> MachineDirectory(uid_t euid) {
  struct Candidate {
    const char* parent;
    const char* directory;
  };
  constexpr Candidate kCandidates[] = {
      {"/run/lock", "/run/lock/onlyone"},
      {"/var/lock", "/var/lock/onlyone"},
      {"/tmp", "/tmp/onlyone-machine"},
  };
  std::vector<std::string> rejected;
  std::vector<std::pair<dev_t, ino_t>> tried;
  for (const Candidate& candidate : kCandidates) {
    struct stat info;
    // The first candidate whose parent is acceptable is the directory for
    // everyone: falling through when only the directory is missing or bad
    // would let root and other users pick different directories.
    if (absl::Status trusted = CheckTrustedParent(
            candidate.parent, /*allow_own=*/false, euid, &info);
        !trusted.ok()) {
      rejected.push_back(std::string(trusted.message()));
      continue;
    }
    const std::pair<dev_t, ino_t> id(info.st_dev, info.st_ino);
    bool seen = false;
    for (const auto& earlier : tried) seen = seen || earlier == id;
    if (seen) continue;  // /var/lock -> /run/lock
    tried.push_back(id);
    if (absl::Status ensured = EnsureSharedDirectory(candidate.directory, euid);
        !ensured.ok()) {
      return ensured;
    }
    return std::string(candidate.directory);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no usable per-machine lock directory: ", absl::StrJoin(rejected, "; ")));
}

absl::StatusOr<InstanceDirectory> ExplicitDirectory(absl::string_view given,
                                                    uid_t euid) {
  if (given.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lock directory contains a NUL byte: ", absl::CEscape(given)));
  }
  const std::string path = WithoutTrailingSlashes(given);
  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    const int error_number = errno;
    if (error_number == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("lock directory ", path, " does not exist"));
    }
    return PosixError(absl::StrCat(path, ": stat"), error_number);
  }
  if (!S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lock directory ", path, " is not a directory"));
  }
  const bool others_write = (info.st_mode & (S_IWGRP | S_IWOTH)) != 0;
  if (info.st_uid == euid && !others_write) {
    return InstanceDirectory{path, "", /*shared=*/false, euid};
  }
  if (info.st_uid == 0 && (!others_write || (info.st_mode & S_ISVTX) != 0)) {
    return InstanceDirectory{path, "", /*shared=*/others_write, euid};
  }
  if (info.st_uid != 0 && info.st_uid != euid) {
    return Unsafe(path, absl::StrCat("owned by uid ", info.st_uid,
                                     ", neither us (uid ", euid, ") nor root"));
  }
  if ((info.st_mode & S_ISVTX) == 0) {
    return Unsafe(path, absl::StrCat("mode ", ModeString(info.st_mode),
                                     ": writable by group or others"));
  }
  return Unsafe(path,
                absl::StrCat("mode ", ModeString(info.st_mode),
                             ": shared (sticky, writable by others) but owned "
                             "by uid ",
                             info.st_uid,
                             ", not root; its owner could remove other "
                             "users' lock files"));
}

}  // namespace

absl::Status ValidateInstanceName(absl::string_view name) {
  constexpr absl::string_view kAllowed =
      "names may contain only letters, digits, '.', '_' and '-'";
  if (name.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("instance name is empty (1 to ", kMaxInstanceNameLength,
                     " characters; ", kAllowed, ")"));
  }
  if (name.size() > kMaxInstanceNameLength) {
    return absl::InvalidArgumentError(absl::StrCat(
        "instance name \"", absl::CEscape(name.substr(0, 40)), "...\" is ",
        name.size(), " characters long; the limit is ",
        kMaxInstanceNameLength));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameCharacter(name[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "instance name \"", absl::CEscape(name), "\" has ",
          DescribeCharacter(name[i]), " at position ", i + 1, "; ", kAllowed));
    }
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat(
        "instance name \"", name, "\" is not allowed: it names a directory"));
  }
  return absl::OkStatus();
}

absl::Status CheckPrivateDirectory(absl::string_view path,
                                   const struct stat& info) {
  return CheckPrivateDirectoryOf(path, info, geteuid());
}

absl::Status CheckPrivateDirectoryOf(absl::string_view path,
                                     const struct stat& info, uid_t euid) {
  if (S_ISLNK(info.st_mode)) {
    return Unsafe(path, "a symbolic link (never followed)");
  }
  if (!S_ISDIR(info.st_mode)) return Unsafe(path, "not a directory");
  if (info.st_uid != euid) {
    return Unsafe(path, absl::StrCat("owned by uid ", info.st_uid,
                                     ", not by us (uid ", euid, ")"));
  }
  if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return Unsafe(path, absl::StrCat("mode ", ModeString(info.st_mode),
                                     ": writable by group or others"));
  }
  return absl::OkStatus();
}

absl::Status CheckSharedDirectory(absl::string_view path,
                                  const struct stat& info) {
  if (S_ISLNK(info.st_mode)) {
    return Unsafe(path, "a symbolic link (never followed)");
  }
  if (!S_ISDIR(info.st_mode)) return Unsafe(path, "not a directory");
  if (info.st_uid != 0) {
    return Unsafe(path, absl::StrCat("owned by uid ", info.st_uid,
                                     ", not root; its owner could remove other "
                                     "users' lock files"));
  }
  if ((info.st_mode & (S_IWGRP | S_IWOTH)) != 0 &&
      (info.st_mode & S_ISVTX) == 0) {
    return Unsafe(path, absl::StrCat("mode ", ModeString(info.st_mode),
                                     ": writable by others but not sticky"));
  }
  return absl::OkStatus();
}

std::string SessionKey() {
  if (const char* xdg = std::getenv("XDG_SESSION_ID"); xdg != nullptr) {
    absl::string_view id(xdg);
    bool valid = !id.empty() && id.size() <= 64 && id != "." && id != "..";
    for (char c : id) valid = valid && IsNameCharacter(c);
    if (valid) return std::string(id);
  }
  // 4294967295 ((u32)-1) means "no audit session".
  std::ifstream audit("/proc/self/sessionid");
  uint64_t audit_id = 0;
  if (audit >> audit_id && audit_id != 4294967295u) {
    return absl::StrCat(audit_id);
  }
  return absl::StrCat("sid-", getsid(0));
}

absl::StatusOr<InstanceDirectory> ResolveInstanceDirectory(
    DirectoryKind kind, absl::string_view explicit_directory) {
  const uid_t euid = geteuid();
  switch (kind) {
    case DirectoryKind::kExplicit:
      return ExplicitDirectory(explicit_directory, euid);
    case DirectoryKind::kUser:
      return UserDirectory(euid);
    case DirectoryKind::kSession: {
      absl::StatusOr<InstanceDirectory> user = UserDirectory(euid);
      if (!user.ok()) return user.status();
      std::string session = ChildPath(
          user->path, absl::StrCat(user->file_prefix, "session-", SessionKey()));
      if (absl::Status ensured = EnsurePrivateDirectory(session, euid);
          !ensured.ok()) {
        return ensured;
      }
      return InstanceDirectory{std::move(session), "", /*shared=*/false, euid};
    }
    case DirectoryKind::kMachine: {
      absl::StatusOr<std::string> machine = MachineDirectory(euid);
      if (!machine.ok()) return machine.status();
      return InstanceDirectory{*std::move(machine), "", /*shared=*/true, euid};
    }
  }
  return absl::InvalidArgumentError("unknown instance scope");
}

std::string LockPathIn(const InstanceDirectory& directory,
                       absl::string_view name) {
  return ChildPath(directory.path,
                   absl::StrCat(directory.file_prefix, name, kLockFileSuffix));
}

std::optional<std::string> InstanceNameOf(const InstanceDirectory& directory,
                                          absl::string_view file_name) {
  if (!absl::ConsumePrefix(&file_name, directory.file_prefix) ||
      !absl::ConsumeSuffix(&file_name, kLockFileSuffix) ||
      !ValidateInstanceName(file_name).ok()) {
    return std::nullopt;
  }
  return std::string(file_name);
}

std::string SocketPathFor(absl::string_view lock_path) {
  absl::ConsumeSuffix(&lock_path, kLockFileSuffix);
  return absl::StrCat(lock_path, ".sock");
}

}  // namespace onlyone::internal
