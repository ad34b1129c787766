// How `onlyone run` finds COMMAND's program, runs it in its own place, and
// reports a program that cannot be started. Both ways of running COMMAND
// use it: in place (exec, when no flag needs onlyone to stay; see
// NeedsSupervisor() in cli/commands.h) and under the supervisor
// (cli/supervisor.h).
//
// The program is looked up before the lock is taken, so that a command
// that is not there (127) or cannot be executed (126) never takes the lock
// from a copy that could run. The lookup is execvp(3)'s: a name with a '/'
// is the file itself; otherwise each directory of $PATH in turn ("" is the
// current directory; without PATH, confstr(_CS_PATH)), the first regular
// file we may execute wins, and a file found but not executable only
// counts when nothing executable follows.
//
// Thread safety: FindProgram() and ReportStartError() are thread-safe;
// ExecInPlace() replaces the process.

#ifndef ONLYONE_CLI_PROGRAM_H_
#define ONLYONE_CLI_PROGRAM_H_

#include <signal.h>

#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace onlyone::cli {

// Finds the program `name` would run. Returns 0 and sets *path to it, made
// absolute (the current directory in front of a relative one); otherwise
// the errno execve(2) would fail with: ENOENT when nothing is found, EACCES
// when only a directory or a file we may not execute is, or what stat(2)
// said.
int FindProgram(const std::string& name, std::string* path);

// Runs the program at `path` (found by FindProgram()) in place of this
// process, with argv `command` (command[0] stays as the user typed it) and
// the environment `environment` ("NAME=VALUE" entries), after setting this
// thread's signal mask to `signal_mask`. Descriptors without close-on-exec
// (an inherited lock's) stay open, and signal handlers revert to their
// default as exec(2) does. Returns only on failure, with its errno.
int ExecInPlace(const std::string& path,
                const std::vector<std::string>& command,
                const std::vector<std::string>& environment,
                const sigset_t& signal_mask);

// Prints why `program` could not be started (errno `error`, from
// FindProgram(), exec or spawn) as one "onlyone: " line, and returns the
// exit code: 127 for a program not found, 71 when the system lacked the
// resources (EAGAIN, ENOMEM), 126 otherwise, as shells do.
int ReportStartError(absl::string_view program, int error, std::ostream& err);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_PROGRAM_H_
