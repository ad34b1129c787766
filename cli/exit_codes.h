// The exit codes of the onlyone command, in one place (docs/cli.md and
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

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_EXIT_CODES_H_
