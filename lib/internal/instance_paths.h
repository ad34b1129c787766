// Where SingleInstance keeps its lock files, and the checks that make those
// directories safe to use.
//
// Rules ("Where the locks live" in docs/design.md):
//  * Names: 1 to 200 of [A-Za-z0-9._-], not "." or "..". A name is always
//    one path component, so it can never reach outside its directory.
//  * Private directories (user and session scopes, and an explicit directory
//    that is not shared) must be real directories (not symlinks), owned by
//    the effective user and not writable by group or others. They are
//    checked with lstat(2) at every use; a missing one that the library owns
//    is created with mkdir(2) 0700 and re-checked through an
//    O_DIRECTORY|O_NOFOLLOW descriptor. Nobody but the owner (and root) can
//    replace a directory that passed the checks, because its parent is
//    either private too or sticky.
//  * User scope: the runtime directory ($XDG_RUNTIME_DIR, or /run/user/UID
//    when XDG_RUNTIME_DIR is unset) when it passes the private checks, with
//    lock files in it directly, named "onlyone-NAME.lock": the one lstat(2)
//    per call then checks the directory that holds them. Otherwise
//    "/tmp/onlyone-UID" (never $TMPDIR, which differs between one user's
//    processes), with files named "NAME.lock", /tmp being owned by root or
//    the user and sticky when others may write to it.
//  * Session scope: the private directory "onlyone-session-ID" in the
//    runtime directory, or "session-ID" in /tmp/onlyone-UID, where ID is
//    $XDG_SESSION_ID when set (and made only of name characters), else the
//    kernel's audit login session from /proc/self/sessionid when set (logind
//    uses that same number as the session id when auditing is on), else
//    "sid-" followed by getsid(0) (the terminal session, narrower than a
//    login session).
//  * Machine scope: "/run/lock/onlyone", else "/var/lock/onlyone", else
//    "/tmp/onlyone-machine". The parent must be owned by root and sticky if
//    others may write to it. The directory must be owned by root and, when
//    others may write to it, sticky; only root creates it (mode 01777), since
//    a directory owned by an ordinary user would let that user delete other
//    users' lock files. Lock files there get mode 0666 so that every user can
//    lock them and write owner records.
//  * Explicit directory: must exist (symlinks in the given path are
//    followed: the caller chose the path) and be either private (as above) or
//    shared: owned by root and sticky when others may write to it.
//
// Thread safety: all functions are thread-safe (they read the environment
// with getenv(3), which must not race with setenv(3)).

#ifndef ONLYONE_LIB_INTERNAL_INSTANCE_PATHS_H_
#define ONLYONE_LIB_INTERNAL_INSTANCE_PATHS_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace onlyone::internal {

inline constexpr size_t kMaxInstanceNameLength = 200;

// Mode of lock files in private directories: nobody else may open them (a
// shared lock taken by another user would keep us out).
inline constexpr mode_t kPrivateLockFileMode = 0600;
// Mode of lock files in shared directories: every user can lock them and
// write the owner record.
inline constexpr mode_t kSharedLockFileMode = 0666;

// OK, or InvalidArgument naming the offending character and its position
// (counted from 1) or the length limit.
[[nodiscard]] absl::Status ValidateInstanceName(absl::string_view name);

enum class DirectoryKind { kUser, kSession, kMachine, kExplicit };

struct InstanceDirectory {
  std::string path;
  // Comes before NAME in file names: "onlyone-" in a runtime directory,
  // which other programs use too; "" in a directory of our own.
  std::string file_prefix;
  // Other users may create files here (machine scope, or a sticky shared
  // directory): lock files and sockets are made usable by everyone.
  bool shared = false;
  // The effective uid the checks were made for.
  uid_t euid = 0;
};

// Finds (creating our own directories when missing) and checks the
// directory of `kind`; `explicit_directory` is used for kExplicit.
// FailedPrecondition names the directory and why it is unsafe.
[[nodiscard]] absl::StatusOr<InstanceDirectory> ResolveInstanceDirectory(
    DirectoryKind kind, absl::string_view explicit_directory = "");

// The login session key used by kSession (see the rules above).
std::string SessionKey();

// Checks a private directory's lstat(2) result: a directory, not a symlink,
// owned by the effective user, not writable by group or others.
[[nodiscard]] absl::Status CheckPrivateDirectory(absl::string_view path,
                                                 const struct stat& info);

// Same, for the effective uid `euid` (saves a geteuid(2) per check).
[[nodiscard]] absl::Status CheckPrivateDirectoryOf(absl::string_view path,
                                                   const struct stat& info,
                                                   uid_t euid);

// Checks a shared directory's lstat(2) result: a directory, not a symlink,
// owned by root, sticky if group or others may write to it.
[[nodiscard]] absl::Status CheckSharedDirectory(absl::string_view path,
                                                const struct stat& info);

// "DIR/PREFIXNAME.lock": the lock file of instance `name` in `directory`.
std::string LockPathIn(const InstanceDirectory& directory,
                       absl::string_view name);

// The instance whose lock file is called `file_name` in `directory`;
// nullopt for any other file (another prefix or suffix, or an invalid name).
std::optional<std::string> InstanceNameOf(const InstanceDirectory& directory,
                                          absl::string_view file_name);

// The messaging socket that belongs to a lock file: "DIR/NAME.sock" for
// "DIR/NAME.lock", else the lock path with ".sock" appended.
std::string SocketPathFor(absl::string_view lock_path);

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_INSTANCE_PATHS_H_
