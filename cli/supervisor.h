// Runs the command of `onlyone run` while onlyone holds the lock, and turns
// its fate into onlyone's exit code.
//
// What it does:
//  * spawns COMMAND (found in PATH) with the given environment, inheriting
//    every descriptor not marked close-on-exec (the lock's among them);
//  * forwards SIGINT, SIGTERM, SIGHUP and SIGQUIT to the command;
//  * with a time limit, sends SIGTERM when the limit is reached and SIGKILL
//    when `grace` has passed after that;
//  * given the held lock's lost() token, stops the command the same way
//    when the lock is lost (exit 69, kExitLockLost);
//  * waits for all of this at once, blocked in ppoll(2) on a signalfd(2)
//    and the token's eventfd, with the next deadline as timeout: no polling
//    loop, no sleeps.
//
// Process groups: normally the command gets a process group of its own, and
// signals and the time limit go to that whole group (the command and what it
// started). When onlyone runs in the foreground of a terminal, the command
// stays in onlyone's group instead, so that it can read the terminal and
// job control (Ctrl-Z, fg) keeps working; the terminal then delivers Ctrl-C
// to both, so onlyone forwards only the signals other processes send (not
// the terminal's), and the time limit signals the command's process alone.
//
// Thread safety: call from one thread; the calling thread's signal mask is
// changed while the command runs and restored afterwards. Other threads
// should block the forwarded signals and SIGCHLD.

#ifndef ONLYONE_CLI_SUPERVISOR_H_
#define ONLYONE_CLI_SUPERVISOR_H_

#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "onlyone/cancellation.h"

namespace onlyone::cli {

struct SuperviseOptions {
  // argv of the command.
  std::vector<std::string> command;
  // The file to run (FindProgram() in cli/program.h); empty: command[0],
  // looked up in PATH unless it has a '/'.
  std::string program;
  // The command's whole environment, "NAME=VALUE" entries.
  std::vector<std::string> environment;
  // InfiniteDuration(): no limit.
  absl::Duration max_runtime = absl::InfiniteDuration();
  // Between SIGTERM and SIGKILL when max_runtime is reached or the lock is
  // lost.
  absl::Duration grace = absl::Seconds(5);
  // The held lock's lost() (HeldLock in lib/lock_backend.h), for a lock that
  // can be lost; nullopt: not watched. lock_name names it in messages.
  std::optional<CancellationToken> lock_lost;
  std::string lock_name;
  // quiet: no notice when the time limit strikes; verbose: say what happens.
  bool quiet = false;
  bool verbose = false;
};

// Runs the command and waits for it. Returns its exit status, 128+N when a
// signal N killed it, 124 when max_runtime was reached, 69 when the lock was
// lost (COMMAND is not started if it was lost already), 127 when it was not
// found, 126 when it could not be executed, 71 on a system error. Messages
// go to `err`, each one line starting with "onlyone: ".
int Supervise(const SuperviseOptions& options, std::ostream& err);

// A copy of this process's environment in which NAME is set to VALUE.
std::vector<std::string> EnvironmentWith(absl::string_view name,
                                         absl::string_view value);

// The arguments as a shell would need them typed: "backup --dir '/a b'".
std::string ShellJoin(absl::Span<const std::string> args);

}  // namespace onlyone::cli

#endif  // ONLYONE_CLI_SUPERVISOR_H_
