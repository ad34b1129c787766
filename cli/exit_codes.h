// The exit codes of the onlyone command, in one place: the constants the
// code returns and the table that `onlyone --help` prints (docs/cli.md and
// docs/onlyone.1 document the same table).
//
// The BSD sysexits.h values are used for onlyone's own outcomes; the codes a
// shell uses (126, 127, 128+N) and timeout(1)'s 124 are used for the
// command's. Any other code from `onlyone run` is the command's own status.

#ifndef ONLYONE_CLI_EXIT_CODES_H_
#define ONLYONE_CLI_EXIT_CODES_H_

namespace onlyone::cli {

// Success: run's command exited 0, status found the lock held, wait found
// the lock free.
inline constexpr int kExitOk = 0;
// status: the lock is free.
inline constexpr int kExitFree = 1;
// EX_USAGE: unknown flag, bad value, bad name, missing command.
inline constexpr int kExitUsage = 64;
// EX_UNAVAILABLE: run: the lock was lost while COMMAND ran (a soft lock
// broken by another host, a lease that could not be renewed), and COMMAND
// was stopped.
inline constexpr int kExitLockLost = 69;
// EX_SOFTWARE: an internal error (a bug in onlyone).
inline constexpr int kExitSoftware = 70;
// EX_OSERR: a system error (permission, missing or unsafe directory, a
// failed system call).
inline constexpr int kExitOsError = 71;
// EX_TEMPFAIL: another process holds the lock (run, unless
// --conflict-exit-code says otherwise), or wait's --timeout ran out.
inline constexpr int kExitConflict = 75;
// run: the command ran longer than --max-runtime and was stopped, as
// timeout(1) reports it.
inline constexpr int kExitTimedOut = 124;
// run: COMMAND was found but could not be executed.
inline constexpr int kExitCannotExecute = 126;
// run: COMMAND was not found.
inline constexpr int kExitNotFound = 127;
// run: the command was killed by signal N: exit code 128 + N.
inline constexpr int kExitSignalBase = 128;

// One row of the exit-code table that help prints.
struct ExitCodeRow {
  int code;
  // Shown instead of `code` for the codes that vary ("N", "128+N").
  const char* shown = nullptr;
  const char* when = "";
};

// The constant for "COMMAND's own exit status" in the table.
inline constexpr int kExitCommandsOwn = -1;

inline constexpr ExitCodeRow kExitCodeTable[] = {
    {kExitOk, nullptr,
     "run: COMMAND exited 0; status: the lock is held; wait: the lock is "
     "free"},
    {kExitFree, nullptr, "status: the lock is free"},
    {kExitCommandsOwn, "N", "run: COMMAND's own exit status"},
    {kExitUsage, nullptr,
     "usage error: unknown flag, bad value, bad name, missing COMMAND, a "
     "stray word before \"--\", conflicting flags, a --lock PATH that is "
     "not a regular file"},
    {kExitLockLost, nullptr,
     "run: the lock was lost while COMMAND ran (--soft: broken by another "
     "host); COMMAND was stopped (SIGTERM, SIGKILL after --grace)"},
    {kExitSoftware, nullptr, "internal error in onlyone"},
    {kExitOsError, nullptr,
     "system error: permission denied, missing or unsafe directory, failed "
     "system call, a --slots count that disagrees with the semaphore's"},
    {kExitConflict, nullptr,
     "the lock (with --slots: every permit) is held by other processes "
     "(run: unless --conflict-exit-code); wait: --timeout ran out"},
    {kExitTimedOut, nullptr,
     "run: COMMAND ran longer than --max-runtime and was stopped"},
    {kExitCannotExecute, nullptr,
     "run: COMMAND was found but cannot be executed"},
    {kExitNotFound, nullptr, "run: COMMAND was not found"},
    {kExitSignalBase, "128+N", "run: COMMAND was killed by signal N"},
};

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_EXIT_CODES_H_
