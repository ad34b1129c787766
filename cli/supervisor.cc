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
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/exit_codes.h"
#include "cli/program.h"
#include "onlyone/internal/cancellation_state.h"

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

namespace {

// While it lives, the forwarded signals and SIGCHLD are blocked on this
// thread and read from a signalfd; SIGCHLD is not ignored (the kernel would
// reap COMMAND itself, and its exit status would be lost).
class SignalWatch {
 public:
  SignalWatch() = default;
  SignalWatch(const SignalWatch&) = delete;
  SignalWatch& operator=(const SignalWatch&) = delete;
  ~SignalWatch() {
    if (fd_ >= 0) close(fd_);
    if (!started_) return;
    pthread_sigmask(SIG_SETMASK, &original_mask_, nullptr);
    if (sigchld_was_ignored_) sigaction(SIGCHLD, &saved_sigchld_, nullptr);
  }

  // 0, or the errno of signalfd(2).
  int Start() {
    sigaction(SIGCHLD, nullptr, &saved_sigchld_);
    sigchld_was_ignored_ = saved_sigchld_.sa_handler == SIG_IGN;
    if (sigchld_was_ignored_) {
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
    pthread_sigmask(SIG_BLOCK, &watched, &original_mask_);
    started_ = true;
    fd_ = signalfd(-1, &watched, SFD_CLOEXEC);
    return fd_ < 0 ? errno : 0;
  }

  int fd() const { return fd_; }
  // The mask before Start(): COMMAND's.
  const sigset_t& original_mask() const { return original_mask_; }

 private:
  bool started_ = false;
  int fd_ = -1;
  sigset_t original_mask_;
  struct sigaction saved_sigchld_;
  bool sigchld_was_ignored_ = false;
};

// Starts COMMAND with `signal_mask`, in a process group of its own unless
// `foreground`. 0 and *pid, or the errno of posix_spawn(3).
int Spawn(const SuperviseOptions& options, const sigset_t& signal_mask,
          bool foreground, pid_t* pid) {
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  short flags = POSIX_SPAWN_SETSIGMASK;
  if (!foreground) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&attributes, 0);  // a group of its own
  }
  posix_spawnattr_setsigmask(&attributes, &signal_mask);
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
  const std::string& program =
      options.program.empty() ? options.command.front() : options.program;
  const int error = posix_spawnp(pid, program.c_str(), nullptr, &attributes,
                                 argv.data(), envp.data());
  posix_spawnattr_destroy(&attributes);
  return error;
}

// Why COMMAND is being stopped.
enum class StopReason { kNone, kTimeLimit, kLockLost };

// One running COMMAND: the signals it is sent, and how it is stopped
// (SIGTERM, then SIGKILL once `grace` has passed).
class Supervision {
 public:
  Supervision(const SuperviseOptions& options, std::ostream& err, pid_t pid,
              bool foreground)
      : options_(options),
        err_(err),
        shown_(ShellJoin(options.command)),
        pid_(pid),
        foreground_(foreground),
        // The process group's id is the command's pid; in the foreground
        // the command alone is signalled.
        target_(foreground ? pid : -pid),
        deadline_(options.max_runtime == absl::InfiniteDuration()
                      ? absl::InfiniteFuture()
                      : MonotonicNow() + options.max_runtime) {}

  pid_t pid() const { return pid_; }
  const std::string& shown() const { return shown_; }
  absl::Time deadline() const { return deadline_; }
  StopReason stop_reason() const { return reason_; }

  // The time limit, or the grace after SIGTERM, has run out.
  void OnDeadline() {
    if (reason_ == StopReason::kNone) {
      if (!options_.quiet) {
        err_ << "onlyone: " << shown_ << " ran longer than "
             << absl::FormatDuration(options_.max_runtime)
             << " (--max-runtime); sending SIGTERM, SIGKILL in "
             << absl::FormatDuration(options_.grace) << " (--grace)\n";
      }
      Terminate(StopReason::kTimeLimit);
    } else if (!killed_) {
      if (!options_.quiet) {
        err_ << "onlyone: " << shown_ << " still running "
             << absl::FormatDuration(options_.grace)
             << " after SIGTERM; sending SIGKILL\n";
      }
      kill(target_, SIGKILL);
      killed_ = true;
      deadline_ = absl::InfiniteFuture();
    }
  }

  // The held lock's lost() token fired.
  void OnLockLost() {
    if (reason_ != StopReason::kNone) return;  // already being stopped
    if (!options_.quiet) {
      err_ << "onlyone: lost the lock " << options_.lock_name << " while "
           << shown_ << " ran; sending SIGTERM, SIGKILL in "
           << absl::FormatDuration(options_.grace) << " (--grace)\n";
    }
    Terminate(StopReason::kLockLost);
  }

  // Forwards what the signalfd holds. false (and a message) when it cannot
  // be read.
  bool ForwardSignals(int signal_fd) {
    struct signalfd_siginfo received[8];
    const ssize_t got = read(signal_fd, received, sizeof received);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) return true;
      err_ << "onlyone: reading signalfd: " << strerror(errno) << "; " << shown_
           << " (pid " << pid_ << ") is left running\n";
      return false;
    }
    for (size_t i = 0; i < got / sizeof received[0]; ++i) {
      const int signal_number = static_cast<int>(received[i].ssi_signo);
      if (signal_number == SIGCHLD) continue;  // the caller waits
      // In the foreground the terminal's signals (sent by the kernel) reach
      // the command directly, being in our group.
      if (foreground_ && received[i].ssi_code == SI_KERNEL) continue;
      if (options_.verbose) {
        err_ << "onlyone: forwarding " << SignalName(signal_number) << " to "
             << (foreground_ ? "pid " : "process group ") << pid_ << "\n";
      }
      kill(target_, signal_number);
    }
    return true;
  }

  // onlyone's exit code once COMMAND ended with waitpid(2) status `status`.
  int Finish(int status) {
    const int code = ExitCodeOf(status);
    if (options_.verbose) {
      if (WIFSIGNALED(status)) {
        err_ << "onlyone: " << shown_ << " was killed by "
             << SignalName(WTERMSIG(status)) << " (exit code " << code << ")\n";
      } else {
        err_ << "onlyone: " << shown_ << " exited with status " << code << "\n";
      }
    }
    switch (reason_) {
      case StopReason::kNone:
        return code;
      case StopReason::kTimeLimit:
        return kExitTimedOut;
      case StopReason::kLockLost:
        return kExitLockLost;
    }
    return code;
  }

 private:
  void Terminate(StopReason reason) {
    kill(target_, SIGTERM);
    kill(target_, SIGCONT);  // a stopped command must see the SIGTERM
    reason_ = reason;
    deadline_ = MonotonicNow() + options_.grace;
  }

  const SuperviseOptions& options_;
  std::ostream& err_;
  const std::string shown_;
  const pid_t pid_;
  const bool foreground_;
  const pid_t target_;
  absl::Time deadline_;
  StopReason reason_ = StopReason::kNone;
  bool killed_ = false;
};

// Blocks in ppoll(2) until a descriptor of `fds` is readable or `deadline`
// (CLOCK_MONOTONIC) passes: the number ready, 0 at the deadline, -1 with
// errno.
int WaitForEvents(absl::Span<struct pollfd> fds, absl::Time deadline) {
  struct timespec timeout;
  struct timespec* timeout_pointer = nullptr;
  if (deadline != absl::InfiniteFuture()) {
    timeout = absl::ToTimespec(
        std::max(deadline - MonotonicNow(), absl::ZeroDuration()));
    timeout_pointer = &timeout;
  }
  return ppoll(fds.data(), fds.size(), timeout_pointer, nullptr);
}

}  // namespace

int Supervise(const SuperviseOptions& options, std::ostream& err) {
  if (options.command.empty()) {
    err << "onlyone: no command to run\n";
    return kExitUsage;
  }
  SignalWatch signals;
  if (const int error = signals.Start(); error != 0) {
    err << "onlyone: signalfd: " << strerror(error) << "\n";
    return kExitOsError;
  }
  std::unique_ptr<internal::CancellationEventFd> lock_lost;
  if (options.lock_lost.has_value()) {
    absl::StatusOr<std::unique_ptr<internal::CancellationEventFd>> watch =
        internal::CancellationEventFd::Create(options.lock_lost->state());
    if (absl::IsCancelled(watch.status())) {
      if (!options.quiet) {
        err << "onlyone: lost the lock " << options.lock_name << " before "
            << ShellJoin(options.command) << " started\n";
      }
      return kExitLockLost;
    }
    if (!watch.ok()) {
      err << "onlyone: " << watch.status().message() << "\n";
      return kExitOsError;
    }
    lock_lost = *std::move(watch);
  }

  const bool foreground = InTerminalForeground();
  pid_t pid;
  if (const int error =
          Spawn(options, signals.original_mask(), foreground, &pid);
      error != 0) {
    return ReportStartError(options.command.front(), error, err);
  }
  Supervision command(options, err, pid, foreground);
  if (options.verbose) {
    err << "onlyone: started " << command.shown() << " as pid " << pid
        << (foreground ? " (in the terminal's foreground)"
                       : " (in a process group of its own)")
        << "\n";
  }

  struct pollfd watched[2] = {
      {signals.fd(), POLLIN, 0},
      {lock_lost != nullptr ? lock_lost->fd() : -1, POLLIN, 0},
  };
  for (;;) {
    const int ready = WaitForEvents(watched, command.deadline());
    if (ready < 0) {
      if (errno == EINTR) continue;
      err << "onlyone: ppoll: " << strerror(errno) << "; " << command.shown()
          << " (pid " << pid << ") is left running\n";
      return kExitOsError;
    }
    if (ready == 0) {
      command.OnDeadline();
      continue;
    }
    if ((watched[1].revents & POLLIN) != 0) {
      command.OnLockLost();
      watched[1].fd = -1;  // it stays readable; poll(2) skips fd -1
    }
    if ((watched[0].revents & POLLIN) != 0 &&
        !command.ForwardSignals(signals.fd())) {
      return kExitOsError;
    }
    int status;
    const pid_t waited = waitpid(pid, &status, WNOHANG);
    if (waited == 0) continue;
    if (waited < 0) {
      if (errno == EINTR) continue;
      err << "onlyone: waitpid " << pid << ": " << strerror(errno) << "\n";
      return kExitOsError;
    }
    return command.Finish(status);
  }
}

}  // namespace onlyone::cli
