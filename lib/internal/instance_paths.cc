#include "onlyone/internal/instance_paths.h"

#include <fcntl.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/user_name.h"

namespace onlyone::internal {
namespace {

// BASE/onlyone-UID holds a user's locks; BASE/onlyone.NAME.lock are the
// machine's.
constexpr absl::string_view kUserDirectoryPrefix = "onlyone-";
constexpr absl::string_view kMachineFilePrefix = "onlyone.";
constexpr absl::string_view kLockFileSuffix = ".lock";
// Earlier builds put user-scope files in the runtime directory itself, as
// onlyone-NAME.lock and onlyone-session-ID/.
constexpr absl::string_view kLegacyRuntimeFilePrefix = "onlyone-";

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

// The test root ("" outside tests), read from the environment once per
// process (every call would cost a scan of the environment; see
// RereadTestRootForTesting()). Never in a set-uid or set-gid program: its
// caller's environment must not move its locks.
// The test root as the environment gives it now, without trailing
// slashes; "" when unset, not absolute, or in a set-uid program.
std::string ReadTestRoot() {
  const char* value = std::getenv(kTestRootEnvVar);
  if (getauxval(AT_SECURE) != 0 || value == nullptr || value[0] != '/') {
    return "";
  }
  return WithoutTrailingSlashes(value);
}

// What the lookups below use, and a generation that changes with it, for
// the caches keyed on it.
struct TestRootState {
  std::string root = ReadTestRoot();
  uint64_t generation = 0;
};

TestRootState& TestRootStorage() {
  static TestRootState* const state = new TestRootState;
  return *state;
}

const char* TestRoot() {
  const std::string& root = TestRootStorage().root;
  return root.empty() ? nullptr : root.c_str();
}

// Root, or in tests the test root's owner, may own the system directories.
bool TrustedOwner(uid_t uid) {
  if (uid == 0) return true;
  const char* root = TestRoot();
  struct stat info;
  return root != nullptr && stat(root, &info) == 0 && info.st_uid == uid;
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

// Makes sure `path` is a private directory, creating it (0700) if missing:
// mkdir, then a re-check through a descriptor that cannot follow a symlink,
// and an fchmod if the umask narrowed the mode. `info` receives its status.
absl::Status EnsurePrivateDirectory(const std::string& path, uid_t euid,
                                    struct stat* info) {
  // Two rounds: a directory created concurrently by another process
  // (EEXIST) is checked like any existing one.
  for (int round = 0; round < 2; ++round) {
    if (lstat(path.c_str(), info) == 0) {
      return CheckPrivateDirectoryOf(path, *info, euid);
    }
    if (errno != ENOENT) {
      return PosixError(absl::StrCat(path, ": lstat"), errno);
    }
    if (mkdir(path.c_str(), 0700) != 0) {
      if (errno == EEXIST) continue;
      return PosixError(absl::StrCat(path, ": mkdir"), errno);
    }
    absl::StatusOr<int> fd = OpenCreatedDirectory(path, info);
    if (!fd.ok()) return fd.status();
    absl::Cleanup close_fd = [fd = *fd] { close(fd); };
    if (info->st_uid == euid && (info->st_mode & 07777) != 0700) {
      if (fchmod(*fd, 0700) != 0) {
        return PosixError(absl::StrCat(path, ": fchmod"), errno);
      }
      info->st_mode = (info->st_mode & ~07777) | 0700;
    }
    return CheckPrivateDirectoryOf(path, *info, euid);
  }
  return absl::FailedPreconditionError(
      absl::StrCat(path, ": appeared and disappeared while being created"));
}

// Why `path` cannot be the base directory, "" when it can: a directory
// (symlinks followed: /var/lock is commonly one to /run/lock) owned by root,
// writable by everyone and sticky.
std::string WhyNotBase(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    return absl::StrCat(path, ": ", std::strerror(errno));
  }
  if (!S_ISDIR(info.st_mode)) return absl::StrCat(path, " is not a directory");
  if (!TrustedOwner(info.st_uid)) {
    return absl::StrCat(path, " is owned by ", DescribeUid(info.st_uid),
                        ", not root");
  }
  if ((info.st_mode & S_IWOTH) == 0) {
    return absl::StrCat(path, " (mode ", ModeString(info.st_mode),
                        ") is not writable by everyone");
  }
  if ((info.st_mode & S_ISVTX) == 0) {
    return absl::StrCat(path, " (mode ", ModeString(info.st_mode),
                        ") is writable by everyone but not sticky");
  }
  return "";
}

constexpr const char* kBaseCandidates[] = {"/run/lock", "/var/lock", "/tmp"};

// The base directory (see the header): the same for every user.
absl::StatusOr<std::string> BaseDirectory() {
  std::vector<std::string> rejected;
  for (const char* candidate : kBaseCandidates) {
    std::string path = SystemPath(candidate);
    std::string why = WhyNotBase(path);
    if (why.empty()) return path;
    rejected.push_back(std::move(why));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no directory for onlyone's locks (one of /run/lock, /var/lock, /tmp "
      "owned by root, writable by everyone and sticky): ",
      absl::StrJoin(rejected, "; ")));
}

std::string UserDirectoryName(uid_t euid) {
  return absl::StrCat(kUserDirectoryPrefix, euid);
}

// Why the user directory `info` describes is refused. One that another user
// made where ours belongs (a squatter) is named, with what to do: no other
// place is tried, since every copy must find the same lock.
absl::Status RefusedUserDirectory(absl::Status unsafe, const struct stat& info,
                                  uid_t euid) {
  if (info.st_uid == euid) return unsafe;
  return absl::FailedPreconditionError(absl::StrCat(
      unsafe.message(),
      "; another user made it where this user's locks belong, and onlyone "
      "uses no other place: have its owner or root remove it"));
}

// BASE/onlyone-UID, created if missing. The first candidate's directory is
// looked at first: once it exists everyone uses it, so the usual call costs
// one lstat(2); only when it is missing is the base chosen.
absl::StatusOr<std::string> UserDirectory(uid_t euid) {
  // The usual path, built once per thread for its uid and test root (every
  // call costs a lstat; it need not cost three allocations too).
  struct UsualPath {
    uid_t euid = static_cast<uid_t>(-1);
    uint64_t generation = 0;
    std::string path;
  };
  thread_local UsualPath cached;
  const uint64_t generation = TestRootStorage().generation;
  if (cached.euid != euid || cached.generation != generation ||
      cached.path.empty()) {
    cached.path =
        ChildPath(SystemPath(kBaseCandidates[0]), UserDirectoryName(euid));
    cached.euid = euid;
    cached.generation = generation;
  }
  const std::string& usual = cached.path;
  struct stat info;
  if (lstat(usual.c_str(), &info) == 0) {
    if (absl::Status safe = CheckPrivateDirectoryOf(usual, info, euid);
        !safe.ok()) {
      return RefusedUserDirectory(std::move(safe), info, euid);
    }
    return usual;
  }
  if (errno != ENOENT) return PosixError(absl::StrCat(usual, ": lstat"), errno);
  absl::StatusOr<std::string> base = BaseDirectory();
  if (!base.ok()) return base.status();
  std::string directory = ChildPath(*base, UserDirectoryName(euid));
  info.st_uid = euid;
  if (absl::Status ensured = EnsurePrivateDirectory(directory, euid, &info);
      !ensured.ok()) {
    return RefusedUserDirectory(std::move(ensured), info, euid);
  }
  return directory;
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
  if (TrustedOwner(info.st_uid) &&
      (!others_write || (info.st_mode & S_ISVTX) != 0)) {
    return InstanceDirectory{path, "", /*shared=*/others_write, euid};
  }
  if (!TrustedOwner(info.st_uid) && info.st_uid != euid) {
    return Unsafe(path, absl::StrCat("owned by ", DescribeUid(info.st_uid),
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

// $XDG_RUNTIME_DIR as earlier builds read it.
std::string LegacyRuntimeDirectory(uid_t euid) {
  const char* from_env = std::getenv("XDG_RUNTIME_DIR");
  return from_env != nullptr && from_env[0] == '/'
             ? WithoutTrailingSlashes(from_env)
             : SystemPath(absl::StrCat("/run/user/", euid));
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
    return Unsafe(path, absl::StrCat("owned by ", DescribeUid(info.st_uid),
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
  if (!TrustedOwner(info.st_uid)) {
    return Unsafe(path, absl::StrCat("owned by ", DescribeUid(info.st_uid),
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
    case DirectoryKind::kUser: {
      absl::StatusOr<std::string> user = UserDirectory(euid);
      if (!user.ok()) return user.status();
      return InstanceDirectory{*std::move(user), "", /*shared=*/false, euid};
    }
    case DirectoryKind::kSession: {
      absl::StatusOr<std::string> user = UserDirectory(euid);
      if (!user.ok()) return user.status();
      std::string session =
          ChildPath(*user, absl::StrCat("session-", SessionKey()));
      struct stat info;
      if (absl::Status ensured = EnsurePrivateDirectory(session, euid, &info);
          !ensured.ok()) {
        return ensured;
      }
      return InstanceDirectory{std::move(session), "", /*shared=*/false, euid};
    }
    case DirectoryKind::kMachine: {
      absl::StatusOr<std::string> base = BaseDirectory();
      if (!base.ok()) return base.status();
      return InstanceDirectory{*std::move(base),
                               std::string(kMachineFilePrefix),
                               /*shared=*/true, euid};
    }
  }
  return absl::InvalidArgumentError("unknown instance scope");
}

std::vector<InstanceDirectory> LegacyDirectories(DirectoryKind kind,
                                                 uid_t euid) {
  const std::string runtime = LegacyRuntimeDirectory(euid);
  const std::string own_tmp =
      SystemPath(absl::StrCat("/tmp/", UserDirectoryName(euid)));
  switch (kind) {
    case DirectoryKind::kUser:
      return {{runtime, std::string(kLegacyRuntimeFilePrefix), false, euid},
              {own_tmp, "", false, euid}};
    case DirectoryKind::kSession: {
      const std::string session = absl::StrCat("session-", SessionKey());
      return {{ChildPath(runtime, absl::StrCat(kLegacyRuntimeFilePrefix, session)),
               "", false, euid},
              {ChildPath(own_tmp, session), "", false, euid}};
    }
    case DirectoryKind::kMachine:
      return {{SystemPath("/run/lock/onlyone"), "", true, euid},
              {SystemPath("/var/lock/onlyone"), "", true, euid},
              {SystemPath("/tmp/onlyone-machine"), "", true, euid}};
    case DirectoryKind::kExplicit:
      break;
  }
  return {};
}

std::vector<std::string> LegacyLockPaths(DirectoryKind kind,
                                         const InstanceDirectory& current,
                                         absl::string_view name) {
  std::vector<std::string> paths;
  const std::string now = LockPathIn(current, name);
  for (const InstanceDirectory& legacy : LegacyDirectories(kind, current.euid)) {
    std::string path = LockPathIn(legacy, name);
    if (path != now) paths.push_back(std::move(path));
  }
  return paths;
}

void RereadTestRootForTesting() {
  TestRootState& state = TestRootStorage();
  state.root = ReadTestRoot();
  ++state.generation;
}

std::string SystemPath(absl::string_view path) {
  return absl::StrCat(TestRootStorage().root, path);
}


std::string LockPathIn(const InstanceDirectory& directory,
                       absl::string_view name) {
  // One StrCat: this runs on every acquisition.
  return absl::StrCat(directory.path == "/" ? "" : directory.path, "/",
                      directory.file_prefix, name, kLockFileSuffix);
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
