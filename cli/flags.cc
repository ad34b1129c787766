#include "cli/flags.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "cli/exit_codes.h"
#include "cli/flag_types.h"

using onlyone::cli::DurationFlag;
using onlyone::cli::OnConflictFlag;
using onlyone::cli::ScopeFlag;

// Which lock.
ABSL_FLAG(std::string, name, "",
          "The instance NAME, whose lock file --scope places. Letters, "
          "digits, '.', '_' and '-', 1 to 200 characters. For run, without "
          "--name or --lock the name is COMMAND's base name.");
ABSL_FLAG(std::string, lock, "",
          "Lock the file PATH itself, as flock(1) does (created if missing, "
          "mode 0644, or 0666 in a sticky world-writable directory such as "
          "/tmp; never truncated or deleted; the directory must exist). A "
          "file holding other data, such as a script locking itself, is "
          "locked read-only and never written. Instead of --name and "
          "--scope.");
ABSL_FLAG(ScopeFlag, scope, ScopeFlag{},
          "Where NAME's lock file lives, in BASE (/run/lock, or /tmp where "
          "/run/lock is not world-writable): user "
          "(BASE/onlyone-UID/NAME.lock: one lock per user, however the "
          "command is started: cron, a login shell, ssh, sudo -u, systemd), "
          "session (BASE/onlyone-UID/session-ID/NAME.lock: one per login "
          "session) or machine (BASE/onlyone.NAME.lock: one lock for all "
          "users).");

ABSL_FLAG(int, slots, 0,
          "Use one of N permits of a counting semaphore instead of the "
          "lock: run COMMAND while holding one, so that at most N copies run "
          "at once (1 to 64). Its permits are the files NAME.00.lock, "
          "NAME.01.lock, ... where NAME.lock would be (portalocker's "
          "BoundedSemaphore naming), or PATH.00.lock, ... for --lock PATH. "
          "Every caller must give the same N. status and wait take the same "
          "--slots.");

ABSL_FLAG(bool, soft, false,
          "With --lock PATH: a soft lock, for filesystems where flock(2) "
          "cannot be trusted (NFS without a lock manager, SMB with nobrl, "
          "FUSE): no kernel lock, a lock file linked atomically with a record "
          "of its holder (host, pid, since, command) and a heartbeat. A "
          "holder on this host is broken as soon as its process is gone, one "
          "on another host after --stale-after without a heartbeat. run "
          "stays as COMMAND's supervisor, keeps the heartbeat, and if "
          "another host breaks the lock stops COMMAND (SIGTERM, SIGKILL "
          "after --grace) and exits 69. Not with --name, --slots, --shared "
          "or --on-conflict replace.");
ABSL_FLAG(DurationFlag, stale_after, DurationFlag{absl::Seconds(30)},
          "With --soft: a lock held from another host is broken when its "
          "heartbeat is older than DURATION (measured on the filesystem's "
          "clock); the holder's heartbeat beats every third of it. Every "
          "user of the lock should give the same. Never applied to a live "
          "holder on this host.");
ABSL_FLAG(std::string, redis, "",
          "Use the Redis lease NAME on the server URL instead of a local "
          "lock: one lock for every host that uses the server. URL: "
          "redis://[user@]host[:port][/db] or unix:///path/to/redis.sock. "
          "The password comes from --redis-password-file, "
          "$ONLYONE_REDIS_PASSWORD_FILE or $ONLYONE_REDIS_PASSWORD (or the "
          "URL, where ps(1) shows it); it is never printed. Not with --lock, "
          "--scope, --slots or --shared.");
ABSL_FLAG(std::string, redis_password_file, "",
          "With --redis: read the server's password from FILE (one trailing "
          "newline removed).");
ABSL_FLAG(DurationFlag, lease, DurationFlag{absl::Seconds(30)},
          "With --redis: how long the lock outlives onlyone if it stops "
          "renewing it (renewed every third of it; at least 50ms). If a "
          "renewal fails or comes too late, the lock is lost: COMMAND gets "
          "SIGTERM, SIGKILL after --grace, and onlyone exits 69.");

// run.
ABSL_FLAG(DurationFlag, wait, DurationFlag{},
          "When the lock is held, wait up to DURATION for it to be free "
          "(blocked in the kernel, no polling), then give up with the "
          "conflict exit code. The same as --on-conflict wait with a limit.");
ABSL_FLAG(OnConflictFlag, on_conflict, OnConflictFlag{},
          "When the lock is held: fail (exit with the conflict exit code at "
          "once), wait (until it is free, or for --wait), or replace (send "
          "the holder SIGTERM, SIGKILL after --grace, and take the lock; "
          "only a holder proven by its owner record and the kernel, on this "
          "host, that onlyone may signal, is replaced; otherwise it is a "
          "conflict).");
ABSL_FLAG(int, conflict_exit_code, onlyone::cli::kExitConflict,
          "Exit code when another process holds the lock (with --slots: "
          "every permit) (0 to 255). With "
          "0, a skipped run is silent too (unless --verbose): a quiet skip "
          "for cron.");
ABSL_FLAG(bool, shared, false,
          "Take a shared lock: any number of shared holders run at once, "
          "and no exclusive holder while they do (flock -s). No owner "
          "record is written. Not with --on-conflict replace.");
ABSL_FLAG(DurationFlag, grace, DurationFlag{absl::Seconds(5)},
          "How long a command has between SIGTERM and SIGKILL: COMMAND "
          "after --max-runtime, and the holder that --on-conflict replace "
          "replaces.");
ABSL_FLAG(DurationFlag, max_runtime, DurationFlag{absl::InfiniteDuration()},
          "Stop COMMAND once it has run for DURATION: SIGTERM to its process "
          "group, SIGKILL after --grace; onlyone then exits 124, as "
          "timeout(1) does. 0 or inf: no limit. A limit keeps onlyone "
          "running beside COMMAND, as its supervisor.");
ABSL_FLAG(bool, quiet, false,
          "Print nothing when the lock is held, while waiting for it, or when "
          "--max-runtime strikes, and no warning about a filesystem where "
          "flock(2) cannot be trusted (usage and system errors are still "
          "printed).");
ABSL_FLAG(bool, verbose, false,
          "Say what happens on stderr: the lock taken, COMMAND's pid, and "
          "with --max-runtime the signals forwarded and how COMMAND ended.");

// status, list.
ABSL_FLAG(bool, json, false,
          "Print JSON instead of a table (fields in docs/cli.md).");

// wait.
ABSL_FLAG(DurationFlag, timeout, DurationFlag{absl::InfiniteDuration()},
          "Give up after DURATION and exit 75.");

namespace onlyone::cli {

absl::Span<const FlagSpec> AllFlags() {
  static const std::vector<FlagSpec>* const all = [] {
    auto* flags = new std::vector<FlagSpec>;
    for (absl::Span<const FlagSpec> subcommand :
         {absl::Span<const FlagSpec>(kRunFlags),
          absl::Span<const FlagSpec>(kStatusFlags),
          absl::Span<const FlagSpec>(kListFlags),
          absl::Span<const FlagSpec>(kWaitFlags)}) {
      for (const FlagSpec& spec : subcommand) {
        const bool listed = std::any_of(
            flags->begin(), flags->end(),
            [&](const FlagSpec& seen) { return seen.name == spec.name; });
        if (!listed) flags->push_back(spec);
      }
    }
    return flags;
  }();
  return *all;
}

}  // namespace onlyone::cli
