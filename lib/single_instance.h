// SingleInstance: call it at program start so that only one copy runs.
//
// Example:
//   int main(int argc, char** argv) {
//     absl::StatusOr<onlyone::SingleInstance> instance =
//         onlyone::SingleInstance::Acquire("com.example.Editor");
//     if (!instance.ok()) {
//       // "com.example.Editor is already running (pid 4711, started
//       //  2026-11-22 03:00:01, /usr/bin/editor --new-window)"
//       std::cerr << instance.status().message() << "\n";
//       return 75;
//     }
//     ...  // the lock is held until `instance` is destroyed or the process
//          // exits, however it exits
//   }
//
// Contract:
//  * The truth is a flock(2) lock on NAME.lock in the scope's directory (see
//    LockPath()). After taking it, the holder writes an owner record into the
//    lock file (pid, process start time, boot id, host, user, executable,
//    command line, time acquired, version). A record is only ever believed
//    when the kernel says the lock is held and the recorded process is still
//    the same process (pid and start time match), so a record left behind by
//    a crashed copy, or a reused pid, is never mistaken for a running copy.
//    The record is written only into a lock file this call created, an
//    empty one, or one that holds an owner record already: any other file
//    (`AcquireAtPath("./job.sh")`) is locked, never written.
//  * Blocking: Acquire() blocks only with ConflictPolicy::kWait (up to
//    wait_timeout) or kReplace (up to grace_period plus the SIGKILL);
//    otherwise it returns at once. Holder(), LockPath() and List() never
//    block on a lock.
//  * Thread safety: the static functions are thread-safe. One SingleInstance
//    object is used from one thread at a time.
//  * Directory safety: see docs/design.md ("Where the locks live"): per-user
//    directories must be owned by the user and not writable by group or
//    others, and one another user made first is refused naming that user;
//    the per-machine lock files are shared by all users but nothing planted
//    there by another user (symlink, hard link, FIFO) is followed or written
//    through.
//
// Status codes: a copy already running, here or where an earlier onlyone
// build kept the same lock -> Unavailable (message names it);
// kWait timed out -> DeadlineExceeded; bad name or options -> InvalidArgument;
// unsafe directory -> FailedPrecondition (naming the directory and why);
// permission -> PermissionDenied; replace refused -> FailedPrecondition
// (naming the holder and why it was not signalled). Every refusal because
// another copy holds the lock (Unavailable, DeadlineExceeded, and the
// refused replacement) carries its holder as a HolderInfo
// (lib/lock_holder.h): HolderFromStatus(status) tells such a conflict from
// any other error, an unsafe directory's FailedPrecondition included.

#ifndef ONLYONE_LIB_SINGLE_INSTANCE_H_
#define ONLYONE_LIB_SINGLE_INSTANCE_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "onlyone/internal/instance_info.h"
#include "onlyone/lock_holder.h"
#include "onlyone/scoped_file_lock.h"

namespace onlyone {

// Where a name's lock file lives.
enum class Scope {
  // One lock per (user, name), however the copy was started: cron, a login
  // shell, ssh, sudo -u, a service (the default). /run/lock/onlyone-UID.
  kUser,
  // One lock per (user, login session, name): each login session of the
  // user has its own copy. /run/lock/onlyone-UID/session-ID.
  kSession,
  // One lock per name for all users of the machine, that any user can
  // take: /run/lock/onlyone.NAME.lock.
  kMachine,
};

// What Acquire() does when another copy holds the lock.
enum class ConflictPolicy {
  kFail,     // return Unavailable at once (the default)
  kWait,     // wait up to InstanceOptions::wait_timeout
  kReplace,  // SIGTERM the verified holder, SIGKILL after the grace period
};

// HolderProcess and InstanceInfo (who holds an instance lock; also what
// the owner record says) are in onlyone/internal/instance_info.h, which
// this header includes: their one home, below the internals that fill them.

// A message sent by a later copy to the running one; see Messaging below.
struct InstanceMessage {
  std::vector<std::string> arguments;
  std::string working_directory;
  std::string payload;  // application-defined bytes
  pid_t sender_pid = 0;
  uid_t sender_uid = 0;
};

struct InstanceOptions {
  Scope scope = Scope::kUser;
  // When set, overrides scope: the lock file is DIRECTORY/NAME.lock. The
  // directory must exist and pass the same safety checks as kUser unless it
  // is shared (sticky and root-owned, like /run/lock).
  std::string directory;

  ConflictPolicy on_conflict = ConflictPolicy::kFail;
  // For kWait: how long to wait for the running copy to exit.
  absl::Duration wait_timeout = absl::InfiniteDuration();
  // For kReplace: how long the running copy has after SIGTERM before SIGKILL.
  absl::Duration grace_period = absl::Seconds(5);

  // Written into the owner record in place of this process's own command
  // line, when not empty (the `onlyone run` command records the command it
  // runs).
  std::vector<std::string> recorded_command_line;
  // Written into the owner record as its executable in place of this
  // process's own (/proc/self/exe), when not empty (`onlyone run` records
  // the program it runs).
  std::string recorded_executable;

  // Passed to the lock: keep it held by exec'd children (see
  // LockOptions::inheritable).
  bool inheritable = false;

  // Takes the lock shared: any number of shared holders run at once, and
  // none while an exclusive holder runs (`onlyone run --shared`). A shared
  // holder writes no owner record, since many hold the one file; it cannot
  // replace (kReplace), listen or UpdateRecord().
  bool shared = false;

  // Messaging. With listen set, the running copy accepts messages on a
  // unix-domain socket beside the lock; on_message runs on a library thread
  // and its return value is sent back as the reply. Without on_message,
  // messages queue for TakeMessage() and message_fd() becomes readable.
  // (on_message handles one message at a time, with all signals blocked, and
  // must not call Release() or destroy the instance.)
  bool listen = false;
  std::function<std::string(const InstanceMessage&)> on_message;
  size_t max_message_bytes = 64 * 1024;
  // Bounds connect, send and acknowledgement when sending.
  absl::Duration message_timeout = absl::Seconds(5);
  // Accept messages from other users' processes (refused by default).
  bool accept_other_users = false;
};

// One instance lock found by List().
struct ListedInstance {
  std::string name;
  std::string lock_path;
  std::optional<InstanceInfo> holder;  // nullopt when not held
};

class SingleInstance {
 public:
  // Takes the instance lock for `name` (letters, digits, '.', '_', '-'; 1 to
  // 200 characters; not "." or ".."), applying options.on_conflict when
  // another copy holds it.
  [[nodiscard]] static absl::StatusOr<SingleInstance> Acquire(
      absl::string_view name, const InstanceOptions& options = {});

  // Same, for an explicit lock file path (the `onlyone run --lock PATH`
  // case); options.scope and options.directory are ignored.
  [[nodiscard]] static absl::StatusOr<SingleInstance> AcquireAtPath(
      absl::string_view lock_path, const InstanceOptions& options = {});

  // OK if `name` is a valid instance name; otherwise InvalidArgument saying
  // which character (and where) or which limit is wrong.
  [[nodiscard]] static absl::Status ValidateName(absl::string_view name);

  // Who holds the lock for `name`: nullopt when nothing holds it.
  [[nodiscard]] static absl::StatusOr<std::optional<InstanceInfo>> Holder(
      absl::string_view name, const InstanceOptions& options = {});
  [[nodiscard]] static absl::StatusOr<std::optional<InstanceInfo>>
  HolderAtPath(absl::string_view lock_path);

  // The lock file for `name` under `options` (creating no file, but creating
  // and checking the user's or session's private directory if missing).
  [[nodiscard]] static absl::StatusOr<std::string> LockPath(
      absl::string_view name, const InstanceOptions& options = {});

  // Every lock of the scope, with its holder, and the copies of an earlier
  // onlyone build that still run where that build kept their locks.
  [[nodiscard]] static absl::StatusOr<std::vector<ListedInstance>> List(
      const InstanceOptions& options = {});

  // The one-line refusal for a named instance: "NAME is already running
  // (pid 4711, started 2026-11-22 03:00:01, /usr/bin/backup --full)".
  static std::string DescribeRunning(absl::string_view name,
                                     const InstanceInfo& holder);

  // The same for a lock file path (AcquireAtPath): "PATH is held by pid
  // 4711 (started ..., ...)".
  static std::string DescribeHeld(absl::string_view lock_path,
                                  const InstanceInfo& holder);

  // Sends a message to the running copy of `name` and returns its reply.
  // Unavailable if no copy runs or it does not listen (or it is exiting);
  // DeadlineExceeded when it does not answer within options.message_timeout.
  // Also: PermissionDenied when it refuses a sender of another user, or when
  // the socket is served by a process of another user that does not hold
  // the lock; ResourceExhausted when the message is larger than the running
  // copy's max_message_bytes; InvalidArgument when it is larger than
  // options.max_message_bytes (then nothing is sent).
  [[nodiscard]] static absl::StatusOr<std::string> Send(
      absl::string_view name, const InstanceMessage& message,
      const InstanceOptions& options = {});

  SingleInstance(SingleInstance&&) noexcept;
  SingleInstance& operator=(SingleInstance&&) noexcept;
  SingleInstance(const SingleInstance&) = delete;
  SingleInstance& operator=(const SingleInstance&) = delete;
  // Stops listening and releases the lock.
  ~SingleInstance();

  // Stops listening and releases the lock, reporting errors.
  [[nodiscard]] absl::Status Release();

  // The underlying lock (for its path, descriptor, HandOffOnFork() and
  // InheritedLocksEnvValue()).
  ScopedFileLock& lock();

  // Rewrites the owner record so that it names the calling process. Call it
  // in the process that received the lock through lock().HandOffOnFork()
  // (a daemon, after its last fork()), so that Holder() reports the daemon
  // rather than the parent that took the lock and exited. FailedPrecondition
  // if this process does not hold the lock. (Listening does not survive a
  // fork(): the child has no listener thread.)
  [[nodiscard]] absl::Status UpdateRecord();

  // Pollable mode: readable when TakeMessage() has a message; -1 if not
  // listening or a callback handles messages.
  int message_fd() const;

  // Pollable mode: the next message, or nullopt if none is waiting. Reply
  // with Reply() before taking the next one; an unreplied message gets an
  // empty reply.
  [[nodiscard]] absl::StatusOr<std::optional<InstanceMessage>> TakeMessage();
  [[nodiscard]] absl::Status Reply(absl::string_view reply);

 private:
  struct State;
  explicit SingleInstance(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// OK if `name` is a valid instance name (the rule of SingleInstance::Acquire()
// above); otherwise InvalidArgument saying which character (and where) or
// which limit is wrong.
[[nodiscard]] inline absl::Status ValidateInstanceName(absl::string_view name) {
  return SingleInstance::ValidateName(name);
}

// Where the counting semaphore (lib/scoped_semaphore.h) of the instance
// `name` lives: the path of its lock file (SingleInstance::LockPath(), with
// the same directory, checks and creation) without ".lock", so that its
// permits are the files NAME.00.lock, NAME.01.lock, ... beside it (`onlyone
// run --name NAME --slots N`).
[[nodiscard]] inline absl::StatusOr<std::string> InstanceSemaphorePath(
    absl::string_view name, const InstanceOptions& options = {}) {
  absl::StatusOr<std::string> lock_path =
      SingleInstance::LockPath(name, options);
  if (!lock_path.ok()) return lock_path.status();
  absl::string_view path = *lock_path;
  if (!absl::ConsumeSuffix(&path, ".lock")) {
    return absl::InternalError(
        absl::StrCat(*lock_path, ": an instance lock file must end in .lock"));
  }
  return std::string(path);
}

}  // namespace onlyone

#endif  // ONLYONE_LIB_SINGLE_INSTANCE_H_
