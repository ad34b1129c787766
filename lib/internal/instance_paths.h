// Where SingleInstance keeps its lock files, and the checks that make those
// directories safe to use.
//
// Rules ("Where the locks live" in docs/design.md gives the reasons):
//  * Names: 1 to 200 of [A-Za-z0-9._-], not "." or "..". A name is always
//    one path component, so it can never reach outside its directory.
//  * The base directory is the first of /run/lock, /var/lock and /tmp that
//    is a directory owned by root, writable by everyone and sticky. Only the
//    directories' modes decide, never who asks, so every user and every way
//    of starting a job (cron, a login shell, ssh, sudo -u, a systemd
//    service) finds the same one. /run/lock is a tmpfs that no logout,
//    RemoveIPC or tmpfiles ageing touches; where it is not world-writable
//    (Fedora, Arch) the base is /tmp.
//  * User scope: "BASE/onlyone-UID", a private directory of the effective
//    user, files "NAME.lock". It depends on nothing but the effective uid:
//    not on $XDG_RUNTIME_DIR, $TMPDIR or the login session.
//  * Session scope: the private directory "session-ID" in the user scope's
//    directory, where ID is $XDG_SESSION_ID when set (and made only of name
//    characters), else the kernel's audit login session from
//    /proc/self/sessionid when set (logind uses that same number as the
//    session id when auditing is on), else "sid-" followed by getsid(0) (the
//    terminal session, narrower than a login session).
//  * Machine scope: files "onlyone.NAME.lock" in BASE itself. No directory
//    of our own: one made by an ordinary user would let that user delete
//    other users' lock files, and waiting for root to make one would leave a
//    fresh machine without machine scope. The sticky bit keeps anyone but a
//    file's owner from removing or renaming it; the lock file's own checks
//    (regular file, one link, never followed) keep planted files harmless.
//  * Private directories (user and session scopes, and an explicit directory
//    that is not shared) must be real directories (not symlinks), owned by
//    the effective user and not writable by group or others. They are
//    checked with lstat(2) at every use; a missing one is created with
//    mkdir(2) 0700 and re-checked through an O_DIRECTORY|O_NOFOLLOW
//    descriptor. One that another user made first (a squatter) is refused,
//    naming that user.
//  * Explicit directory: must exist (symlinks in the given path are
//    followed: the caller chose the path) and be either private (as above) or
//    shared: owned by root and sticky when others may write to it.
//  * Earlier builds kept user-scope locks in $XDG_RUNTIME_DIR (falling back
//    to /tmp/onlyone-UID), session locks below those, and machine locks in
//    a root-made /run/lock/onlyone, /var/lock/onlyone or /tmp/onlyone-machine.
//    LegacyLockPaths() names them so that a copy started by an earlier build
//    is still seen.
//
// Tests: when $ONLYONE_TEST_ROOT is set (and the program is not set-uid),
// every system directory above is looked up below it ("/run/lock" becomes
// "$ONLYONE_TEST_ROOT/run/lock"), and a directory owned by the test root's
// owner is trusted like one owned by root. The variable is read at the first
// call in a process; a test that changes it calls RereadTestRootForTesting().
//
// Thread safety: all functions are thread-safe (they read the environment
// with getenv(3), which must not race with setenv(3)).

#ifndef ONLYONE_LIB_INTERNAL_INSTANCE_PATHS_H_
#define ONLYONE_LIB_INTERNAL_INSTANCE_PATHS_H_

#include <sys/stat.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace onlyone::internal {

inline constexpr size_t kMaxInstanceNameLength = 200;

// The environment variable that moves every system directory for tests.
inline constexpr char kTestRootEnvVar[] = "ONLYONE_TEST_ROOT";

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
  // Comes before NAME in file names: "onlyone." in the shared base
  // directory, which other programs use too; "" in a directory of our own.
  std::string file_prefix;
  // Other users may create files here (machine scope, or a sticky shared
  // directory): lock files and sockets are made usable by everyone.
  bool shared = false;
  // The effective uid the checks were made for.
  uid_t euid = 0;

  // The mode a lock file created here gets.
  mode_t lock_file_mode() const {
    return shared ? kSharedLockFileMode : kPrivateLockFileMode;
  }
};

// Finds (creating our own directories when missing) and checks the
// directory of `kind`; `explicit_directory` is used for kExplicit.
// FailedPrecondition names the directory and why it is unsafe.
[[nodiscard]] absl::StatusOr<InstanceDirectory> ResolveInstanceDirectory(
    DirectoryKind kind, absl::string_view explicit_directory = "");

// The directories where earlier builds kept the locks of `kind` for the
// effective user `euid`, existing or not, without checking them (they are
// only ever read): see the header comment. Empty for kExplicit.
std::vector<InstanceDirectory> LegacyDirectories(DirectoryKind kind,
                                                 uid_t euid);

// The lock files earlier builds used for `name`: LockPathIn() of each of
// LegacyDirectories() that is not `current` itself.
std::vector<std::string> LegacyLockPaths(DirectoryKind kind,
                                         const InstanceDirectory& current,
                                         absl::string_view name);

// The login session key used by kSession (see the rules above).
std::string SessionKey();

// Reads $ONLYONE_TEST_ROOT again (for tests that change it). Not
// thread-safe against calls that resolve directories.
void RereadTestRootForTesting();

// `path` ("/run/lock") as this process sees it: below $ONLYONE_TEST_ROOT in
// tests, else unchanged.
std::string SystemPath(absl::string_view path);

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
