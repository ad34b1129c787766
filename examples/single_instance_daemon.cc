// single_instance_daemon: a daemon of which only one copy runs. It takes its
// SingleInstance in the foreground, so that a refusal is printed to the
// terminal, then daemonizes (fork, setsid, fork) and keeps the instance
// across both forks with lock().HandOffOnFork().
//
//   single_instance_daemon --name=exampled --run_for=60s
//
// prints (each message on one line)
//   exampled: daemon pid 4713 holds /run/lock/onlyone-1000/exampled.lock for 1m
//   (or until SIGTERM)
// and returns at once; started again while the daemon runs, it prints
//   exampled is already running (pid 4713, started ...,
//   ./single_instance_daemon --name=exampled --run_for=60s)
// and exits 75. The daemon ends after --run_for or on SIGTERM/SIGINT/SIGHUP.
//
// Why the hand-off: a fork()ed child never owns its parent's lock (the
// library closes the descriptor in children, so that helpers do not keep a
// lock alive), but HandOffOnFork() makes the next fork give the lock to the
// child instead. It acts once, so the intermediate child calls it again
// before the second fork. The daemon then calls UpdateRecord() so that the
// owner record names it rather than the parent that took the lock.

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/time/time.h"
#include "onlyone/single_instance.h"

ABSL_FLAG(std::string, name, "onlyone-daemon-example",
          "Instance name: letters, digits, '.', '_', '-'.");
ABSL_FLAG(absl::Duration, run_for, absl::Seconds(60),
          "How long the daemon runs (SIGTERM ends it sooner).");

namespace {

// The daemon itself, after the second fork: returns its exit code.
int RunDaemon(onlyone::SingleInstance& instance, absl::Duration run_for) {
  // The record still names the parent that took the lock and has exited.
  absl::Status updated = instance.UpdateRecord();
  if (chdir("/") != 0) return 1;
  umask(022);
  const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    close(null_fd);
  }
  if (!updated.ok()) return 1;
  // The daemon's "work": wait for the end of run_for or a signal.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  const struct timespec timeout = absl::ToTimespec(run_for);
  sigtimedwait(&signals, nullptr, &timeout);
  return instance.Release().ok() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string name = absl::GetFlag(FLAGS_name);
  const absl::Duration run_for = absl::GetFlag(FLAGS_run_for);

  absl::StatusOr<onlyone::SingleInstance> instance =
      onlyone::SingleInstance::Acquire(name);
  if (!instance.ok()) {
    std::cerr << instance.status().message() << "\n";
    return absl::IsUnavailable(instance.status()) ? EX_TEMPFAIL : 1;
  }
  int daemon_pid_pipe[2];
  if (pipe2(daemon_pid_pipe, O_CLOEXEC) != 0) {
    perror("pipe2");
    return 1;
  }
  std::cout.flush();
  instance->lock().HandOffOnFork();
  const pid_t first = fork();
  if (first < 0) {
    perror("fork");
    return 1;
  }
  if (first == 0) {
    // The intermediate child: a new session without a terminal, then the
    // second fork so that the daemon can never acquire one.
    close(daemon_pid_pipe[0]);
    setsid();
    instance->lock().HandOffOnFork();  // once per fork
    const pid_t daemon = fork();
    if (daemon < 0) _exit(1);
    if (daemon > 0) {
      const std::string pid = std::to_string(daemon);
      _exit(write(daemon_pid_pipe[1], pid.data(), pid.size()) ==
                    static_cast<ssize_t>(pid.size())
                ? 0
                : 1);
    }
    close(daemon_pid_pipe[1]);
    _exit(RunDaemon(*instance, run_for));
  }
  // The foreground parent: report the daemon and return. Its copy of the
  // instance no longer owns the lock, so its destructor only closes a
  // descriptor.
  close(daemon_pid_pipe[1]);
  char pid[32] = {};
  const ssize_t got = read(daemon_pid_pipe[0], pid, sizeof pid - 1);
  close(daemon_pid_pipe[0]);
  int status = 0;
  waitpid(first, &status, 0);
  if (got <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::cerr << name << ": the daemon did not start\n";
    return 1;
  }
  std::cout << name << ": daemon pid " << pid << " holds "
            << instance->lock().path() << " for "
            << absl::FormatDuration(run_for) << " (or until SIGTERM)"
            << std::endl;
  return 0;
}
