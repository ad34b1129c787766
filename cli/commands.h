// The subcommands of the onlyone command, as functions of plain request
// structs that return the exit code (cli/exit_codes.h). cli/cli.cc fills the
// requests from the flags; nothing here reads a flag.

#ifndef ONLYONE_CLI_COMMANDS_H_
#define ONLYONE_CLI_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cli/exit_codes.h"
#include "cli/lock_choice.h"
#include "onlyone/scoped_semaphore.h"
#include "onlyone/single_instance.h"
#include "onlyone/soft_file_lock.h"
#include "nlohmann/json.hpp"

namespace onlyone::cli {

// COMMAND's environment variable with the held lock's fencing token, for a
// lock that has them (--redis).
inline constexpr char kFencingTokenEnvVar[] = "ONLYONE_FENCING_TOKEN";

struct RunRequest {
  LockTarget target;
  ConflictPolicy on_conflict = ConflictPolicy::kFail;
  // kWait: how long to wait.
  absl::Duration wait_timeout = absl::InfiniteDuration();
  // Exit code when another process holds the lock.
  int conflict_exit_code = kExitConflict;
  bool shared = false;
  // Between SIGTERM and SIGKILL: for max_runtime, and for the holder that
  // kReplace replaces.
  absl::Duration grace = absl::Seconds(5);
  absl::Duration max_runtime = absl::InfiniteDuration();
  bool quiet = false;
  bool verbose = false;
  std::vector<std::string> command;
};

// Whether `onlyone run` must stay as COMMAND's supervisor: only what acts
// after COMMAND has started needs it: --max-runtime, and a lock that can be
// lost while held (LockChoice::can_be_lost), whose loss must stop COMMAND.
// Otherwise onlyone takes the lock, writes the owner record and becomes
// COMMAND (exec(2) in the same process, the lock's descriptor inherited):
// the recorded pid and start time are COMMAND's, signals reach it directly
// and its exit status is its own.
bool NeedsSupervisor(const RunRequest& request, const LockChoice& lock);

// onlyone run: finds COMMAND's program (127 or 126 without locking when it
// cannot be run), takes the lock, then runs the command holding it (it
// inherits the lock): in place of onlyone, or, when NeedsSupervisor(), as a
// child whose exit code becomes onlyone's. Returns onlyone's exit code; in
// place, returns only when the exec fails. The lock is never released
// explicitly: it is freed when the last process holding the inherited
// descriptor (the command, anything it left running, a supervising onlyone)
// exits, as with flock(1).
//
// With a wait (kWait) and a terminal on stderr (unless quiet), one line
// says whom it waits for when the wait starts, and one when the lock is
// taken.
int Run(const RunRequest& request, std::ostream& err);

struct StatusRequest {
  LockTarget target;
  bool json = false;
};

// onlyone status: prints who holds the lock; 0 when held, 1 when free.
// With --slots: each slot's holder; 0 when every permit is held, 1 when one
// is free.
int Status(const StatusRequest& request, std::ostream& out, std::ostream& err);

struct ListRequest {
  Scope scope = Scope::kUser;
  bool json = false;
  // --redis URL: the locks held on that server instead of the scope's.
  std::string redis_server;
  std::string redis_password_file;
};

// onlyone list: every lock of the scope (with --redis: held on the server)
// and its holder; 0.
int List(const ListRequest& request, std::ostream& out, std::ostream& err);

struct WaitRequest {
  LockTarget target;
  absl::Duration timeout = absl::InfiniteDuration();
};

// onlyone wait: blocks until the lock (with --slots: a permit) is free, by
// taking it and releasing it at once; 0, or 75 when the timeout runs out.
int Wait(const WaitRequest& request, std::ostream& err);

// The name `onlyone run` uses without --name or --lock: the command's base
// name, with characters a name may not contain replaced by '_' and cut to
// the length a name may have (the rule is ValidateInstanceName()'s); "" when
// nothing of it makes a name.
std::string NameFromCommand(absl::string_view program);

// The exit code for a failure that is not a conflict: InvalidArgument 64,
// Internal/Unknown/DataLoss 70, anything else 71.
int ExitCodeForError(const absl::Status& status);

// The JSON of status and list (see docs/cli.md): a holder, and one lock.
// Keys keep the documented order.
nlohmann::ordered_json HolderToJson(const InstanceInfo& holder);
nlohmann::ordered_json LockToJson(absl::string_view name,
                                  absl::string_view lock_path,
                                  const std::optional<InstanceInfo>& holder);

// The holder of status --soft --json (see docs/cli.md).
nlohmann::ordered_json SoftHolderToJson(const SoftLockHolder& holder);

// The JSON of status --slots (see docs/cli.md): the semaphore at `path`
// with `slots` permits and the holders ScopedSemaphore::Holders() found,
// each permit with its holders (and held slot files beyond `slots`).
nlohmann::ordered_json SemaphoreToJson(
    absl::string_view path, int slots,
    const std::vector<SemaphoreSlotHolder>& holders);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_COMMANDS_H_
