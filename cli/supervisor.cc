#include "cli/supervisor.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/exit_codes.h"
#include "cli/program.h"

extern char** environ;

namespace onlyone::cli {
namespace {

constexpr int kForwardedSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

absl::Time MonotonicNow() {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return absl::TimeFromTimespec(now);
}

std::string SignalName(int signal_number) {
  if (const char* abbreviation = sigabbrev_np(signal_number)) {
    return absl::StrCat("SIG", abbreviation);
  }
  return absl::StrCat("signal ", signal_number);
}

// Whether a terminal on stdin, stdout or stderr has this process's group in
// its foreground (an interactive `onlyone run`).
bool InTerminalForeground() {
  for (int fd : {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO}) {
    const pid_t foreground = tcgetpgrp(fd);
    if (foreground >= 0) return foreground == getpgrp();
  }
  return false;
}

bool SafeForShell(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || absl::StrContains("_-./:=@%+,", c);
}

std::string ShellQuote(absl::string_view arg) {
  bool safe = !arg.empty();
  for (char c : arg) safe = safe && SafeForShell(c);
  if (safe) return std::string(arg);
  std::string quoted = "'";
  for (char c : arg) {
    if (c == '\'') {
      quoted += "'\\''";
    } else if (c == '\n') {
      quoted += "'$'\\n''";  // keeps messages on one line
    } else {
      quoted += c;
    }
  }
  quoted += "'";
  return quoted;
}

// An exit code for the status waitpid(2) reported.
int ExitCodeOf(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return kExitSignalBase + WTERMSIG(status);
  return kExitSoftware;
}

}  // namespace

std::string ShellJoin(absl::Span<const std::string> args) {
  std::vector<std::string> quoted;
  quoted.reserve(args.size());
  for (const std::string& arg : args) quoted.push_back(ShellQuote(arg));
  return absl::StrJoin(quoted, " ");
}

std::vector<std::string> EnvironmentWith(absl::string_view name,
                                         absl::string_view value) {
  const std::string prefix = absl::StrCat(name, "=");
  std::vector<std::string> environment;
  for (char** entry = environ; entry != nullptr && *entry != nullptr;
       ++entry) {
    if (!absl::StartsWith(*entry, prefix)) environment.emplace_back(*entry);
  }
  environment.push_back(absl::StrCat(prefix, value));
  return environment;
}

int Supervise(const SuperviseOptions& options, std::ostream& err) {
  if (options.command.empty()) {
    err << "onlyone: no command to run\n";
    return kExitUsage;
  }
  const std::string& program =
      options.program.empty() ? options.command.front() : options.program;
  const std::string shown = ShellJoin(options.command);

  // A SIGCHLD ignored by whoever started onlyone would make the kernel reap
  // the command itself, and its exit status would be lost.
  struct sigaction saved_sigchld;
  sigaction(SIGCHLD, nullptr, &saved_sigchld);
  const bool sigchld_was_ignored = saved_sigchld.sa_handler == SIG_IGN;
  if (sigchld_was_ignored) {
    struct sigaction default_action = {};
    default_action.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &default_action, nullptr);
  }
  sigset_t watched;
  sigemptyset(&watched);
  for (int signal_number : kForwardedSignals) {
    sigaddset(&watched, signal_number);
  }
  sigaddset(&watched, SIGCHLD);
  sigset_t original_mask;
  pthread_sigmask(SIG_BLOCK, &watched, &original_mask);
  absl::Cleanup restore_signals = [&] {
    pthread_sigmask(SIG_SETMASK, &original_mask, nullptr);
    if (sigchld_was_ignored) sigaction(SIGCHLD, &saved_sigchld, nullptr);
  };

  const int signal_fd = signalfd(-1, &watched, SFD_CLOEXEC);
  if (signal_fd < 0) {
    err << "onlyone: signalfd: " << strerror(errno) << "\n";
    return kExitOsError;
  }
  absl::Cleanup close_signal_fd = [signal_fd] { close(signal_fd); };

  const bool foreground = InTerminalForeground();
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  short flags = POSIX_SPAWN_SETSIGMASK;
  if (!foreground) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&attributes, 0);  // a group of its own
  }
  posix_spawnattr_setsigmask(&attributes, &original_mask);
  posix_spawnattr_setflags(&attributes, flags);

  std::vector<char*> argv;
  for (const std::string& arg : options.command) {
    argv.push_back(const_cast<char*>(arg.c_str()));
  }
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const std::string& entry : options.environment) {
    envp.push_back(const_cast<char*>(entry.c_str()));
  }
  envp.push_back(nullptr);

  pid_t pid;
  const int spawn_error = posix_spawnp(&pid, program.c_str(), nullptr,
                                       &attributes, argv.data(), envp.data());
  posix_spawnattr_destroy(&attributes);
  if (spawn_error != 0) {
    return ReportStartError(options.command.front(), spawn_error, err);
  }
  // The process group's id is the command's pid; in the foreground the
  // command alone is signalled.
  const pid_t target = foreground ? pid : -pid;
  if (options.verbose) {
    err << "onlyone: started " << shown << " as pid " << pid
        << (foreground ? " (in the terminal's foreground)"
                       : " (in a process group of its own)")
        << "\n";
  }

  enum class Phase { kRunning, kTerminating, kKilled };
  Phase phase = Phase::kRunning;
  absl::Time deadline = options.max_runtime == absl::InfiniteDuration()
                            ? absl::InfiniteFuture()
                            : MonotonicNow() + options.max_runtime;
  for (;;) {
    struct pollfd readable = {signal_fd, POLLIN, 0};
    struct timespec timeout;
    struct timespec* timeout_pointer = nullptr;
    if (deadline != absl::InfiniteFuture()) {
      timeout = absl::ToTimespec(
          std::max(deadline - MonotonicNow(), absl::ZeroDuration()));
      timeout_pointer = &timeout;
    }
    const int ready = ppoll(&readable, 1, timeout_pointer, nullptr);
    if (ready < 0) {
      if (errno == EINTR) continue;
      err << "onlyone: ppoll: " << strerror(errno) << "; " << shown
          << " (pid " << pid << ") is left running\n";
      return kExitOsError;
    }
    if (ready == 0) {  // a deadline
      if (phase == Phase::kRunning) {
        if (!options.quiet) {
          err << "onlyone: " << shown << " ran longer than "
              << absl::FormatDuration(options.max_runtime)
              << " (--max-runtime); sending SIGTERM, SIGKILL in "
              << absl::FormatDuration(options.grace) << " (--grace)\n";
        }
        kill(target, SIGTERM);
        kill(target, SIGCONT);  // a stopped command must see the SIGTERM
        phase = Phase::kTerminating;
        deadline = MonotonicNow() + options.grace;
      } else if (phase == Phase::kTerminating) {
        if (!options.quiet) {
          err << "onlyone: " << shown << " still running "
              << absl::FormatDuration(options.grace)
              << " after SIGTERM; sending SIGKILL\n";
        }
        kill(target, SIGKILL);
        phase = Phase::kKilled;
        deadline = absl::InfiniteFuture();
      }
      continue;
    }

    struct signalfd_siginfo received[8];
    const ssize_t got = read(signal_fd, received, sizeof received);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      err << "onlyone: reading signalfd: " << strerror(errno) << "; "
          << shown << " (pid " << pid << ") is left running\n";
      return kExitOsError;
    }
    for (size_t i = 0; i < got / sizeof received[0]; ++i) {
      const int signal_number = static_cast<int>(received[i].ssi_signo);
      if (signal_number == SIGCHLD) continue;  // waitpid below
      // In the foreground the terminal's signals (sent by the kernel) reach
      // the command directly, being in our group.
      if (foreground && received[i].ssi_code == SI_KERNEL) continue;
      if (options.verbose) {
        err << "onlyone: forwarding " << SignalName(signal_number) << " to "
            << (foreground ? "pid " : "process group ") << pid << "\n";
      }
      kill(target, signal_number);
    }

    int status;
    const pid_t waited = waitpid(pid, &status, WNOHANG);
    if (waited == 0) continue;
    if (waited < 0) {
      if (errno == EINTR) continue;
      err << "onlyone: waitpid " << pid << ": " << strerror(errno) << "\n";
      return kExitOsError;
    }
    const int code = ExitCodeOf(status);
    if (options.verbose) {
      if (WIFSIGNALED(status)) {
        err << "onlyone: " << shown << " was killed by "
            << SignalName(WTERMSIG(status)) << " (exit code " << code
            << ")\n";
      } else {
        err << "onlyone: " << shown << " exited with status " << code
            << "\n";
      }
    }
    if (phase != Phase::kRunning) return kExitTimedOut;
    return code;
  }
}

}  // namespace onlyone::cli
