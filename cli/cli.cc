#include "cli/cli.h"

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cli/commands.h"
#include "cli/exit_codes.h"
#include "cli/flag_parser.h"
#include "cli/flag_types.h"
#include "cli/flags.h"
#include "onlyone/scoped_semaphore.h"
#include "onlyone/single_instance.h"
#include "onlyone/version.h"

// Debian's Abseil is built without NDEBUG, so every absl::Mutex lock
// tracks lock order for deadlock cycles (a debugging aid: a graph, a
// thread identity and their arenas on first use). The flags lock one as
// they register, so for a short command that is a good part of its
// start-up; builds of Abseil with NDEBUG do not track at all. Off before
// any other static initializer runs (priority 101, the first one a program
// may use), the flags' registration in cli/flags.cc included.
__attribute__((constructor(101))) static void NoMutexDeadlockTracking() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

namespace onlyone::cli {
namespace {

constexpr char kUsage[] =
    "Usage:\n"
    "  onlyone run    [--name NAME | --lock PATH] [--scope "
    "user|session|machine]\n"
    "                 [--slots N | --soft [--stale-after DURATION]]\n"
    "                 [--wait DURATION] [--on-conflict fail|wait|replace]\n"
    "                 [--conflict-exit-code N] [--shared] [--grace "
    "DURATION]\n"
    "                 [--max-runtime DURATION] [--quiet | --verbose]\n"
    "                 [--] COMMAND [ARG...]\n"
    "  onlyone run    --redis URL [--name NAME] [--lease DURATION] "
    "[--wait DURATION]\n"
    "                 [--grace DURATION] [--] COMMAND [ARG...]\n"
    "  onlyone status (--name NAME | --lock PATH) [--scope "
    "user|session|machine]\n"
    "                 [--slots N | --soft [--stale-after DURATION]] "
    "[--json]\n"
    "  onlyone status --redis URL --name NAME [--json]\n"
    "  onlyone list   [--scope user|session|machine | --redis URL] "
    "[--json]\n"
    "  onlyone wait   (--name NAME | --lock PATH) [--scope "
    "user|session|machine]\n"
    "                 [--slots N | --soft [--stale-after DURATION]]\n"
    "                 [--timeout DURATION]\n"
    "  onlyone wait   --redis URL --name NAME [--timeout DURATION]\n"
    "  onlyone help [COMMAND]     onlyone [COMMAND] --help     onlyone "
    "--version\n";

constexpr char kDurations[] =
    "DURATION: seconds (\"30\", \"0.5\") or a number with a unit ms, s, m "
    "or h (\"250ms\", \"90s\", \"1.5m\", \"2h\", \"1h30m\"); \"inf\" is no "
    "limit.";

// The exit-code table of help, from cli/exit_codes.h.
std::string ExitCodesHelp() {
  constexpr int kIndent = 9;
  std::string help = "Exit codes:\n";
  for (const ExitCodeRow& row : kExitCodeTable) {
    const std::string code =
        row.shown != nullptr ? row.shown : absl::StrCat(row.code);
    std::string text = Wrap(row.when, kIndent);
    text.replace(
        0, kIndent,
        absl::StrCat("  ", code, std::string(kIndent - 2 - code.size(), ' ')));
    absl::StrAppend(&help, text);
  }
  return help;
}

// flock(1)'s spellings, typed out of habit, where they mean what one of
// ours means.
constexpr ShortFlag kRunShortFlags[] = {
    {'n', "wait", "0"},         // --nonblock: fail at once
    {'w', "wait", "", "SECONDS"},  // --timeout SECONDS
    {'E', "conflict_exit_code", "", "N"},
    {'s', "shared", "true"},
    {'x', "shared", "false"},  // exclusive, the default
    {'e', "shared", "false"},
};
// flock(1)'s spellings that mean nothing of ours, and what to use instead.
constexpr FlagHint kRunHints[] = {
    {"-c", "give COMMAND after \"--\" (-- sh -c 'COMMAND' for a shell "
           "command line)"},
    {"--command", "give COMMAND after \"--\" (-- sh -c 'COMMAND' for a shell "
                  "command line)"},
    {"-o", "COMMAND always inherits the lock (flock(1)'s --close is not "
           "supported)"},
    {"--close", "COMMAND always inherits the lock (flock(1)'s --close is not "
                "supported)"},
    {"-u", "a lock is released when its holders exit; onlyone never unlocks "
           "one it did not take"},
    {"--unlock", "a lock is released when its holders exit; onlyone never "
                 "unlocks one it did not take"},
    {"-F", "COMMAND runs in onlyone's own process already, unless "
           "--max-runtime needs onlyone to stay"},
    {"--no-fork", "COMMAND runs in onlyone's own process already, unless "
                  "--max-runtime needs onlyone to stay"},
    {"--nonblock", "failing at once is the default (or -n, or --wait 0)"},
    {"--nb", "failing at once is the default (or -n, or --wait 0)"},
    {"--exclusive", "the lock is exclusive unless --shared"},
    {"--timeout", "did you mean --wait DURATION? (--timeout is for 'onlyone "
                  "wait')"},
};

struct Subcommand {
  const char* name;
  const char* synopsis;
  const char* summary;
  const char* description;
  absl::Span<const FlagSpec> flags;
  bool takes_command;
  absl::Span<const ShortFlag> short_flags = {};
  absl::Span<const FlagHint> hints = {};
  // Runs the subcommand with its parsed arguments; the exit code.
  int (*handler)(const ParsedArgs& parsed, std::ostream& out,
                 std::ostream& err) = nullptr;
};

constexpr char kShortHelp[] =
    "Try 'onlyone --help' for more information.\n";

int UsageError(std::ostream& err, absl::string_view command,
               absl::string_view message) {
  err << "onlyone" << (command.empty() ? "" : " ") << command << ": "
      << message << "\n"
      << "Try 'onlyone " << command << (command.empty() ? "" : " ")
      << "--help' for more information.\n";
  return kExitUsage;
}

// --redis URL --name NAME [--lease] [--redis-password-file]: the Redis
// lease NAME (any name the library takes; it says what is wrong with one).
absl::StatusOr<LockTarget> RedisTargetFromFlags(const ParsedArgs& parsed,
                                                LockTarget target,
                                                bool required) {
  for (const char* flag : {"lock", "scope", "slots"}) {
    if (parsed.Given(flag)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, " applies to local locks, not to --redis"));
    }
  }
  target.slots = 0;
  target.redis_server = absl::GetFlag(FLAGS_redis);
  if (target.redis_server.empty()) {
    return absl::InvalidArgumentError("--redis needs a non-empty URL");
  }
  target.redis_password_file = absl::GetFlag(FLAGS_redis_password_file);
  target.redis_lease = absl::GetFlag(FLAGS_lease).value;
  if (parsed.Given("name")) {
    target.name = absl::GetFlag(FLAGS_name);
  } else if (required) {
    return absl::InvalidArgumentError("--redis needs --name NAME");
  }
  return target;
}

// --name/--lock/--scope, as given.
absl::StatusOr<LockTarget> TargetFromFlags(const ParsedArgs& parsed,
                                           bool required) {
  LockTarget target;
  target.scope = absl::GetFlag(FLAGS_scope).value;
  if (parsed.Given("slots")) {
    target.slots = absl::GetFlag(FLAGS_slots);
    if (target.slots < 1 || target.slots > kMaxSemaphoreSlots) {
      return absl::InvalidArgumentError(
          absl::StrCat("--slots takes 1 to ", kMaxSemaphoreSlots,
                       " permits, not ", target.slots));
    }
  }
  const bool by_name = parsed.Given("name");
  const bool by_path = parsed.Given("lock");
  target.soft = absl::GetFlag(FLAGS_soft);
  if (parsed.Given("stale_after")) {
    if (!target.soft) {
      return absl::InvalidArgumentError(
          "--stale-after applies to --soft only");
    }
    target.stale_after = absl::GetFlag(FLAGS_stale_after).value;
    if (target.stale_after <= absl::ZeroDuration() ||
        target.stale_after == absl::InfiniteDuration()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--stale-after needs a finite DURATION above 0, not ",
          absl::FormatDuration(target.stale_after)));
    }
  }
  if (parsed.Given("redis")) {
    if (target.soft) {
      return absl::InvalidArgumentError(
          "give --soft or --redis URL, not both: they are two kinds of lock");
    }
    return RedisTargetFromFlags(parsed, target, required);
  }
  for (const char* flag : {"redis_password_file", "lease"}) {
    if (parsed.Given(flag)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", absl::StrReplaceAll(flag, {{"_", "-"}}),
          " goes with --redis URL"));
    }
  }
  if (target.soft) {
    // NAME's lock file is in a local directory (/run/lock), where flock(2)
    // can be trusted; a soft lock is for a file on a shared filesystem.
    if (!by_path) {
      return absl::InvalidArgumentError(
          "--soft needs --lock PATH (a lock file on the shared filesystem); "
          "--name places its lock in a local directory, where the flock(2) "
          "lock needs no --soft");
    }
    if (target.slots > 0) {
      return absl::InvalidArgumentError(
          "--soft cannot be combined with --slots: a soft lock has one "
          "holder");
    }
  }
  if (by_name && by_path) {
    return absl::InvalidArgumentError(
        "give --name NAME or --lock PATH, not both");
  }
  if (by_path) {
    target.lock_path = absl::GetFlag(FLAGS_lock);
    if (target.lock_path.empty()) {
      return absl::InvalidArgumentError("--lock needs a non-empty PATH");
    }
    if (parsed.Given("scope")) {
      return absl::InvalidArgumentError(
          "--scope applies to --name only; --lock PATH names the lock file "
          "itself");
    }
    return target;
  }
  if (by_name) {
    target.name = absl::GetFlag(FLAGS_name);
    if (absl::Status valid = ValidateInstanceName(target.name); !valid.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--name: ", valid.message(),
                       " (use --lock PATH for a lock file elsewhere)"));
    }
    return target;
  }
  if (required) {
    return absl::InvalidArgumentError("needs --name NAME or --lock PATH");
  }
  return target;
}

// --max-runtime 0 means no limit, as timeout(1)'s 0 does.
absl::Duration Limit(absl::Duration duration) {
  return duration == absl::ZeroDuration() ? absl::InfiniteDuration()
                                          : duration;
}

absl::StatusOr<RunRequest> RunRequestFromFlags(const ParsedArgs& parsed) {
  RunRequest request;
  absl::StatusOr<LockTarget> target =
      TargetFromFlags(parsed, /*required=*/false);
  if (!target.ok()) return target.status();
  request.target = *std::move(target);
  request.command = parsed.positional;
  if (request.command.empty()) {
    return absl::InvalidArgumentError(
        "missing COMMAND: give the command to run after \"--\", e.g. "
        "'onlyone run --name backup -- backup.sh --full'");
  }
  if (request.target.name.empty() && request.target.lock_path.empty()) {
    request.target.name = NameFromCommand(request.command.front());
    if (request.target.name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot make a lock name of COMMAND \"",
          absl::CEscape(request.command.front()),
          "\"; give --name NAME or --lock PATH"));
    }
  }

  request.on_conflict = absl::GetFlag(FLAGS_on_conflict).value;
  if (parsed.Given("wait")) {
    if (parsed.Given("on_conflict") &&
        request.on_conflict != ConflictPolicy::kWait) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--wait goes with --on-conflict wait, not --on-conflict ",
          ConflictPolicyName(request.on_conflict)));
    }
    request.on_conflict = ConflictPolicy::kWait;
    request.wait_timeout = absl::GetFlag(FLAGS_wait).value;
    if (request.wait_timeout == absl::ZeroDuration()) {
      request.on_conflict = ConflictPolicy::kFail;  // try once
    }
  }
  request.conflict_exit_code = absl::GetFlag(FLAGS_conflict_exit_code);
  if (request.conflict_exit_code < 0 || request.conflict_exit_code > 255) {
    return absl::InvalidArgumentError(
        absl::StrCat("--conflict-exit-code ", request.conflict_exit_code,
                     " is not an exit code: use 0 to 255"));
  }
  request.shared = absl::GetFlag(FLAGS_shared);
  if (request.shared && request.on_conflict == ConflictPolicy::kReplace) {
    return absl::InvalidArgumentError(
        "--shared cannot be combined with --on-conflict replace: a shared "
        "lock has no single holder to replace");
  }
  if (request.target.soft && request.shared) {
    return absl::InvalidArgumentError(
        "--soft cannot be combined with --shared: a soft lock has no shared "
        "mode");
  }
  if (request.target.soft &&
      request.on_conflict == ConflictPolicy::kReplace) {
    return absl::InvalidArgumentError(
        "--soft cannot be combined with --on-conflict replace: its holder "
        "may run on another host, which onlyone cannot signal (a dead or "
        "stale holder is broken without it)");
  }
  if (request.target.slots > 0 && request.shared) {
    return absl::InvalidArgumentError(
        "--slots cannot be combined with --shared: a permit has no shared "
        "mode");
  }
  if (request.target.slots > 0 &&
      request.on_conflict == ConflictPolicy::kReplace) {
    return absl::InvalidArgumentError(
        "--slots cannot be combined with --on-conflict replace: no one "
        "holder of the permits stands for the others");
  }
  if (KindOf(request.target) == LockKind::kRedis) {
    if (request.shared) {
      return absl::InvalidArgumentError(
          "--shared cannot be combined with --redis: a Redis lease has no "
          "shared mode");
    }
    if (request.on_conflict == ConflictPolicy::kReplace) {
      return absl::InvalidArgumentError(
          "--on-conflict replace cannot be combined with --redis: a holder "
          "on another host cannot be signalled (wait for it, or let its "
          "lease end)");
    }
  }
  request.grace = absl::GetFlag(FLAGS_grace).value;
  request.max_runtime = Limit(absl::GetFlag(FLAGS_max_runtime).value);
  request.quiet = absl::GetFlag(FLAGS_quiet);
  request.verbose = absl::GetFlag(FLAGS_verbose);
  if (request.quiet && request.verbose) {
    return absl::InvalidArgumentError(
        "--quiet and --verbose exclude each other");
  }
  return request;
}

int RunCommand(const ParsedArgs& parsed, std::ostream& out, std::ostream& err) {
  absl::StatusOr<RunRequest> request = RunRequestFromFlags(parsed);
  if (!request.ok()) return UsageError(err, "run", request.status().message());
  out.flush();
  return Run(*request, err);
}

int StatusCommand(const ParsedArgs& parsed, std::ostream& out,
                  std::ostream& err) {
  StatusRequest request;
  absl::StatusOr<LockTarget> target =
      TargetFromFlags(parsed, /*required=*/true);
  if (!target.ok()) return UsageError(err, "status", target.status().message());
  request.target = *std::move(target);
  request.json = absl::GetFlag(FLAGS_json);
  return Status(request, out, err);
}

int ListCommand(const ParsedArgs& parsed, std::ostream& out,
                std::ostream& err) {
  ListRequest request;
  request.scope = absl::GetFlag(FLAGS_scope).value;
  request.json = absl::GetFlag(FLAGS_json);
  if (parsed.Given("redis")) {
    if (parsed.Given("scope")) {
      return UsageError(err, "list", "--scope applies to local locks, not to "
                                     "--redis");
    }
    request.redis_server = absl::GetFlag(FLAGS_redis);
    if (request.redis_server.empty()) {
      return UsageError(err, "list", "--redis needs a non-empty URL");
    }
    request.redis_password_file = absl::GetFlag(FLAGS_redis_password_file);
  } else if (parsed.Given("redis_password_file")) {
    return UsageError(err, "list", "--redis-password-file goes with --redis URL");
  }
  return List(request, out, err);
}

int WaitCommand(const ParsedArgs& parsed, std::ostream& out,
                std::ostream& err) {
  WaitRequest request;
  absl::StatusOr<LockTarget> target =
      TargetFromFlags(parsed, /*required=*/true);
  if (!target.ok()) return UsageError(err, "wait", target.status().message());
  request.target = *std::move(target);
  request.timeout = absl::GetFlag(FLAGS_timeout).value;
  return Wait(request, err);
}

const Subcommand kSubcommands[] = {
    {"run", "onlyone run [FLAGS] [--] COMMAND [ARG...]",
     "take the lock, then run COMMAND holding it",
     "Takes the lock, then runs COMMAND holding it. COMMAND inherits the "
     "lock (its descriptor is listed in $ONLYONE_INHERITED_LOCKS, for "
     "ScopedFileLock::AdoptInherited), so the lock stays held as long as "
     "COMMAND, or anything it leaves running, lives; as with flock(1), "
     "which excludes it on the same file and the other way round.\n\n"
     "COMMAND runs in onlyone's place: onlyone takes the lock, writes the "
     "owner record and executes COMMAND in the same process, so COMMAND's "
     "pid is the one recorded, signals reach it directly, and its exit "
     "status is onlyone's (a shell shows 128+N if signal N killed it). Only "
     "--max-runtime needs onlyone to stay: then COMMAND runs as its child, "
     "in a process group of its own, onlyone forwards SIGINT, SIGTERM, "
     "SIGHUP and SIGQUIT to that group and exits with COMMAND's status "
     "(128+N if signal N killed it).\n\n"
     "When another process holds the lock, onlyone prints one line naming "
     "the lock, the processes that hold it (pid and command), since when, "
     "and exits 75 (--conflict-exit-code). While it waits for the lock "
     "(--wait, --on-conflict wait) with a terminal on stderr, it says whom "
     "it waits for, and when it has the lock (not with --quiet).\n\n"
     "With --slots N, onlyone takes one of N permits of a counting "
     "semaphore instead of the lock, so that at most N copies run at once "
     "(the files NAME.00.lock, NAME.01.lock, ..., portalocker's naming); "
     "the same conflict policies, exit codes and --wait apply, the refusal "
     "names each slot's holder, and COMMAND inherits the permit.\n\n"
     "With --lock PATH --soft, onlyone takes a soft lock, made for NFS, SMB "
     "and FUSE filesystems where flock(2) may exclude only this machine or "
     "nobody: onlyone stays as COMMAND's supervisor and keeps the lock's "
     "heartbeat; a refusal names the holder's host, pid and command; if "
     "another host breaks the lock, COMMAND gets SIGTERM (SIGKILL after "
     "--grace) and onlyone exits 69; when COMMAND ends, onlyone releases "
     "the lock. Without --soft, a --lock PATH on such a filesystem gets one "
     "warning on stderr (not with --quiet) suggesting --soft.\n\n"
     "With --redis URL, the lock is a lease on that Redis server, one for "
     "every host that uses it: onlyone stays as COMMAND's supervisor and "
     "renews the lease every --lease/3; COMMAND gets the lease's fencing "
     "token, which strictly increases from one holder to the next, in "
     "$ONLYONE_FENCING_TOKEN (give it to what COMMAND writes to, which "
     "refuses smaller ones). If the lease is lost (a renewal refused or "
     "failed, the server gone, onlyone stopped past the lease), COMMAND gets "
     "SIGTERM, SIGKILL after --grace, and onlyone exits 69. A refusal names "
     "the holder's host, pid, since and command; --wait waits without "
     "polling (woken by the release, or when a dead holder's lease ends); "
     "when COMMAND ends onlyone releases the lease. A server that cannot be "
     "reached is an error (exit 71) within 5 seconds.\n\n"
     "COMMAND is everything after \"--\", or from the first argument that "
     "is not a flag; with \"--\", any other word before it is an error. "
     "Without --name or --lock, the name is COMMAND's base name.\n\n"
     "flock(1)'s spellings work too: -n (--wait 0), -w SECONDS (--wait), "
     "-E N (--conflict-exit-code), -s (--shared), -x and -e (exclusive, the "
     "default).",
     kRunFlags, true, kRunShortFlags, kRunHints, RunCommand},
    {"status",
     "onlyone status (--name NAME | --lock PATH) [--scope SCOPE] [--json]",
     "show who holds a lock",
     "Shows who holds the lock: pid, command, since when, user, host. Exits "
     "0 when the lock is held and 1 when it is free. A holder that is not "
     "onlyone (flock(1), for example) is shown by its pid only. With "
     "--slots N: each slot's holder (pid, command, start time); exits 0 "
     "when every permit is held and 1 when one is free. With --soft: the soft "
     "lock's holder (host, pid, command, since), its heartbeat's age and "
     "whether it is stale. With --redis URL: "
     "the lease's holder (host, pid, since, command, fencing token, time "
     "left on its lease).",
     kStatusFlags,
     false,
     {},
     {},
     StatusCommand},
    {"list",
     "onlyone list [--scope SCOPE] [--json]",
     "list the locks of a scope and their holders",
     "Lists every lock of the scope, held or free, with its holder, "
     "including copies of an earlier onlyone build that still run where "
     "that build kept their locks. A semaphore (--slots) shows once, with "
     "how many of its permits are held and by whom. With --redis URL: the "
     "leases held on that server, with their holders.",
     kListFlags,
     false,
     {},
     {},
     ListCommand},
    {"wait",
     "onlyone wait (--name NAME | --lock PATH) [--scope SCOPE] "
     "[--timeout DURATION]",
     "wait until a lock is free",
     "Blocks until the lock is free (blocked in the kernel, no polling) and "
     "exits 0; exits 75 if --timeout runs out first. It waits by taking the "
     "lock exclusively and releasing it at once, so for that instant it "
     "holds the lock; a lock file that does not exist is free at once (and "
     "is not created). With --slots N it waits for a free permit, and "
     "returns at once when fewer than N are held. With --soft it waits for "
     "the soft lock (without polling for a holder on this host; polling "
     "with backoff up to 1s for one on another host). With --redis URL, the "
     "same for the lease NAME on that server (woken by its release, no "
     "polling).",
     kWaitFlags,
     false,
     {},
     {},
     WaitCommand},
};

const Subcommand* FindSubcommand(absl::string_view name) {
  for (const Subcommand& subcommand : kSubcommands) {
    if (name == subcommand.name) return &subcommand;
  }
  return nullptr;
}

std::string SubcommandHelp(const Subcommand& subcommand) {
  return absl::StrCat("Usage: ", subcommand.synopsis, "\n\n",
                      Wrap(subcommand.description, 0), "\nFlags:\n",
                      FlagsHelp(subcommand.flags));
}

}  // namespace

std::string CommandHelp(const std::string& command) {
  const Subcommand* subcommand = FindSubcommand(command);
  if (subcommand == nullptr) return FullHelp();
  std::string help = SubcommandHelp(*subcommand);
  absl::StrAppend(&help, "\n", Wrap(kDurations, 0));
  if (subcommand->takes_command || command == "wait" || command == "status") {
    absl::StrAppend(&help, "\n", ExitCodesHelp());
  }
  return help;
}

std::string FullHelp() {
  std::string help =
      "onlyone: run a command only if no other copy of it is running, with "
      "flock(2) locks.\n\n";
  absl::StrAppend(&help, kUsage, "\nCommands:\n");
  for (const Subcommand& subcommand : kSubcommands) {
    absl::StrAppend(&help, "  ", subcommand.name,
                    std::string(8 - std::string(subcommand.name).size(), ' '),
                    subcommand.summary, "\n");
  }
  for (const Subcommand& subcommand : kSubcommands) {
    absl::StrAppend(&help, "\n", SubcommandHelp(subcommand));
  }
  absl::StrAppend(&help, "\n", Wrap(kDurations, 0), "\n", ExitCodesHelp(),
                  "\nExamples:\n"
                  "  # crontab: skip quietly when the previous run is still "
                  "going\n"
                  "  */5 * * * * onlyone run --name sync "
                  "--conflict-exit-code 0 -- /usr/local/bin/sync.sh\n"
                  "  # wait up to 10 minutes for the lock, stop the job "
                  "after 2 hours\n"
                  "  onlyone run --lock /run/lock/backup.lock --wait 10m "
                  "--max-runtime 2h -- backup --full\n"
                  "  onlyone status --name sync --json\n"
                  "\nSee docs/cli.md and onlyone(1).\n");
  return help;
}

int Main(absl::Span<const std::string> args, std::ostream& out,
         std::ostream& err) {
  if (args.empty()) {
    err << "onlyone: missing command (run, status, list or wait)\n"
        << kUsage << kShortHelp;
    return kExitUsage;
  }
  const std::string& first = args.front();
  if (first == "--help" || first == "-h" || first == "-help" ||
      first == "help") {
    if (first == "help" && args.size() > 1) {
      if (FindSubcommand(args[1]) == nullptr) {
        return UsageError(err, "",
                          absl::StrCat("unknown command \"",
                                       absl::CEscape(args[1]), "\""));
      }
      out << CommandHelp(args[1]);
    } else {
      out << FullHelp();
    }
    return kExitOk;
  }
  if (first == "--version" || first == "version") {
    out << "onlyone " << kVersion << "\n";
    return kExitOk;
  }
  const Subcommand* subcommand = FindSubcommand(first);
  if (subcommand == nullptr) {
    return UsageError(
        err, "",
        absl::StrCat(first.size() > 1 && first[0] == '-'
                         ? "expected a command (run, status, list, wait) "
                           "before \""
                         : "unknown command \"",
                     absl::CEscape(first), "\""));
  }
  CommandSyntax syntax;
  syntax.command = subcommand->name;
  syntax.accepted = subcommand->flags;
  syntax.known = AllFlags();
  syntax.short_flags = subcommand->short_flags;
  syntax.hints = subcommand->hints;
  syntax.takes_command = subcommand->takes_command;
  absl::StatusOr<ParsedArgs> parsed = ParseArgs(args.subspan(1), syntax);
  if (!parsed.ok()) {
    if (!absl::IsInvalidArgument(parsed.status())) {
      err << "onlyone: " << parsed.status().message() << "\n";
      return kExitSoftware;
    }
    return UsageError(err, subcommand->name, parsed.status().message());
  }
  if (parsed->help) {
    out << CommandHelp(subcommand->name);
    return kExitOk;
  }
  return subcommand->handler(*parsed, out, err);
}

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  const int code = Main(args, std::cout, std::cerr);
  std::cout.flush();
  return code;
}

}  // namespace onlyone::cli
