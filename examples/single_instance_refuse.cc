// single_instance_refuse: a program of which only one copy runs; a second
// copy is refused and told who runs.
//
//   single_instance_refuse --name=nightly-backup --hold=30s
//
// The first copy prints (each message on one line)
//   pid 4711 is the only nightly-backup (lock
//   /run/lock/onlyone-1000/nightly-backup.lock); working for 30s
// and holds the instance for --hold. Started again meanwhile, it prints
//   nightly-backup is already running (pid 4711, started 2026-11-22 03:00:01,
//   ./single_instance_refuse --name=nightly-backup --hold=30s)
// and exits 75 (EX_TEMPFAIL: try again later). Any other failure (a bad
// name, an unsafe lock directory) exits 1.
//
// --scope picks user (the default), session or machine; --dir an explicit
// lock directory instead.

#include <sysexits.h>
#include <unistd.h>

#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "onlyone/single_instance.h"

ABSL_FLAG(std::string, name, "onlyone-example",
          "Instance name: letters, digits, '.', '_', '-'.");
ABSL_FLAG(absl::Duration, hold, absl::Seconds(30),
          "How long this copy runs once it is the only one.");
ABSL_FLAG(std::string, scope, "user", "user, session or machine.");
ABSL_FLAG(std::string, dir, "", "Explicit lock directory (overrides --scope).");

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string name = absl::GetFlag(FLAGS_name);
  onlyone::InstanceOptions options;
  const std::string scope = absl::GetFlag(FLAGS_scope);
  if (scope == "session") {
    options.scope = onlyone::Scope::kSession;
  } else if (scope == "machine") {
    options.scope = onlyone::Scope::kMachine;
  } else if (scope != "user") {
    std::cerr << "single_instance_refuse: unknown --scope " << scope << "\n";
    return EX_USAGE;
  }
  options.directory = absl::GetFlag(FLAGS_dir);

  absl::StatusOr<onlyone::SingleInstance> instance =
      onlyone::SingleInstance::Acquire(name, options);
  if (!instance.ok()) {
    // For a running copy the message names it: pid, start time, command.
    std::cerr << instance.status().message() << "\n";
    return absl::IsUnavailable(instance.status()) ? EX_TEMPFAIL : 1;
  }
  std::cout << "pid " << getpid() << " is the only " << name << " (lock "
            << instance->lock().path() << "); working for "
            << absl::FormatDuration(absl::GetFlag(FLAGS_hold)) << std::endl;
  absl::SleepFor(absl::GetFlag(FLAGS_hold));  // the program's "work"
  // The destructor would release it too; Release() reports errors.
  if (absl::Status released = instance->Release(); !released.ok()) {
    std::cerr << released.message() << "\n";
    return 1;
  }
  return 0;
}
