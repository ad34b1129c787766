// A program of a user of onlyone, built outside this workspace against an
// installed (or Bazel-loaded) onlyone by tests/consumers/run: one copy at a
// time (SingleInstance), a function under a file lock (RunExclusive).
//
//   app NAME LOCK_PATH
//
// Prints "instance NAME held by pid PID" once the library reports this very
// process as the holder of NAME, then "exclusive: 42" from the function run
// under LOCK_PATH; exits 0 only if both happened. Any error is printed with
// its status and exits 1. Run it with ONLYONE_TEST_ROOT set: the instance
// lock then lives below that root, never in the machine's directories.

#include <unistd.h>

#include <iostream>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "onlyone/exclusive.h"
#include "onlyone/single_instance.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: app NAME LOCK_PATH\n";
    return 64;
  }
  const char* name = argv[1];
  absl::StatusOr<onlyone::SingleInstance> instance =
      onlyone::SingleInstance::Acquire(name);
  if (!instance.ok()) {
    std::cerr << "app: " << instance.status() << "\n";
    return 1;
  }
  absl::StatusOr<std::optional<onlyone::InstanceInfo>> holder =
      onlyone::SingleInstance::Holder(name);
  if (!holder.ok()) {
    std::cerr << "app: " << holder.status() << "\n";
    return 1;
  }
  if (!holder->has_value() || (*holder)->pid != getpid()) {
    std::cerr << "app: " << name << " is not reported as held by pid "
              << getpid() << "\n";
    return 1;
  }
  std::cout << "instance " << name << " held by pid " << (*holder)->pid
            << "\n";

  onlyone::LockOptions options;
  options.timeout = absl::ZeroDuration();
  absl::StatusOr<int> answer =
      onlyone::RunExclusive(argv[2], options, [] { return 42; });
  if (!answer.ok()) {
    std::cerr << "app: " << answer.status() << "\n";
    return 1;
  }
  std::cout << "exclusive: " << *answer << "\n";
  return 0;
}
