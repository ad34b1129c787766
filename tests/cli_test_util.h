// Helpers for the end-to-end tests of the onlyone command: start the built
// binary (a `data` dependency of the test) as a real process, with chosen
// descriptors passed to it, its output captured in files.
//
// Synchronisation with the guarded commands goes through pipes: the tests
// run commands such as
//   sh -c 'printf s >&8; exec cat <&9'
// with descriptor 8 the write end of a pipe the test reads ("started") and
// descriptor 9 the read end of a pipe the test holds open (the command ends
// when the test closes it). No sleeps.

#ifndef ONLYONE_TESTS_CLI_TEST_UTIL_H_
#define ONLYONE_TESTS_CLI_TEST_UTIL_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/test_util.h"

namespace onlyone::testing {

// The onlyone binary in the test's runfiles.
std::string OnlyonePath();

// The running test binary (/proc/self/exe), to re-execute as a command.
std::string TestBinaryPath();

// A descriptor of the test to pass to the child as `child_fd`.
struct PassFd {
  int child_fd;
  int test_fd;
};

// onlyone (or any program) running in the background. stdin is /dev/null;
// stdout and stderr go to files, read with out() and err().
class Process {
 public:
  // Starts `argv` (argv[0] a path); `env` entries ("NAME=VALUE") are added
  // to the test's environment.
  static std::unique_ptr<Process> Start(const std::vector<std::string>& argv,
                                        const std::vector<PassFd>& fds = {},
                                        const std::vector<std::string>& env =
                                            {});
  // Same, with OnlyonePath() in front of `args`.
  static std::unique_ptr<Process> StartOnlyone(
      const std::vector<std::string>& args, const std::vector<PassFd>& fds = {},
      const std::vector<std::string>& env = {});

  pid_t pid() const { return child_.pid(); }
  // Exit code, or 128+N for signal N.
  int Wait() { return child_.Wait(); }
  void Kill(int signal_number) { child_.Kill(signal_number); }
  std::string out() const;
  std::string err() const;

 private:
  Process(Child child, std::string out_path, std::string err_path)
      : child_(std::move(child)),
        out_path_(std::move(out_path)),
        err_path_(std::move(err_path)) {}

  Child child_;
  std::string out_path_;
  std::string err_path_;
};

struct Result {
  int code;
  std::string out;
  std::string err;
};

// Runs onlyone with `args` to its end.
Result RunOnlyone(const std::vector<std::string>& args,
                  const std::vector<PassFd>& fds = {},
                  const std::vector<std::string>& env = {});

// Whether an exclusive flock(2) on `path` would be refused right now (tried
// with LOCK_NB on a new descriptor, released at once). The test's own view,
// independent of onlyone's code.
bool LockedElsewhere(const std::string& path);

}  // namespace onlyone::testing

#endif  // ONLYONE_TESTS_CLI_TEST_UTIL_H_
