// guarded_job: a job of which only one copy may run at a time.
//
//   guarded_job --lock=/tmp/nightly.lock --hold=5s
//
// Tries the lock once (timeout ZeroDuration). When it is free, prints
//   pid 4711 holds /tmp/nightly.lock; working for 5s
// does its "work" (here: sleeps for --hold), releases the lock, prints
//   pid 4711 released /tmp/nightly.lock
// and exits 0. When another process holds it, prints the refusal, which
// names the holder:
//   guarded_job: /tmp/nightly.lock is held by pid 4711 (guarded_job)
// and exits 75 (EX_TEMPFAIL: try again later). Any other failure (a missing
// directory, a symlink in the way, no permission) exits 1; a missing --lock
// exits 64 (EX_USAGE).

#include <sysexits.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "onlyone/scoped_file_lock.h"

ABSL_FLAG(std::string, lock, "",
          "Path of the lock file; created (mode 0644) if missing.");
ABSL_FLAG(absl::Duration, hold, absl::Seconds(2),
          "How long the job works while holding the lock, e.g. 500ms, 3s.");

namespace {

// Runs the job under the lock at `lock_path`; returns the exit code.
int RunGuardedJob(const std::string& lock_path, absl::Duration hold) {
  onlyone::LockOptions options;
  options.timeout = absl::ZeroDuration();  // try once, never wait
  absl::StatusOr<onlyone::ScopedFileLock> lock =
      onlyone::ScopedFileLock::Acquire(lock_path, options);
  if (!lock.ok()) {
    std::cerr << "guarded_job: " << lock.status().message() << std::endl;
    return absl::IsUnavailable(lock.status()) ? EX_TEMPFAIL : 1;
  }

  // std::endl flushes: a supervisor reading our output through a pipe or a
  // file must see this line while we still hold the lock.
  std::cout << "pid " << getpid() << " holds " << lock_path
            << "; working for " << absl::FormatDuration(hold) << std::endl;
  absl::SleepFor(hold);  // the job's work

  // The destructor would release too; Release() also reports errors.
  if (absl::Status released = lock->Release(); !released.ok()) {
    std::cerr << "guarded_job: " << released.message() << std::endl;
    return 1;
  }
  std::cout << "pid " << getpid() << " released " << lock_path << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Runs a job only if no other copy holds the lock.\n"
      "Usage: guarded_job --lock=PATH [--hold=DURATION]");
  absl::ParseCommandLine(argc, argv);
  const std::string lock_path = absl::GetFlag(FLAGS_lock);
  if (lock_path.empty()) {
    std::cerr << "guarded_job: --lock=PATH is required" << std::endl;
    return EX_USAGE;
  }
  return RunGuardedJob(lock_path, absl::GetFlag(FLAGS_hold));
}
