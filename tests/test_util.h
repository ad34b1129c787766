// Helpers for tests that need real processes: forking a child that runs a
// function, pipes to synchronise with it, and waiting for the kernel to
// report a blocked flock(2) waiter.
//
// The children run the function and _exit() with its return value, so they
// never return into GoogleTest. Tests synchronise through pipes (a child
// writes a byte when it holds a lock, then blocks until the test writes
// back), never through sleeps.

#ifndef ONLYONE_TESTS_TEST_UTIL_H_
#define ONLYONE_TESTS_TEST_UTIL_H_

#include <sys/types.h>

#include <functional>
#include <string>
#include <utility>

#include "absl/time/time.h"

namespace onlyone::testing {

// A one-way pipe; both ends close on destruction.
class Pipe {
 public:
  Pipe();
  ~Pipe();
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  // Writes one byte; aborts the process on failure.
  void Send(char byte = '.');
  // Reads one byte, waiting at most `timeout`; returns '\0' on timeout or
  // end of file.
  char Receive(absl::Duration timeout = absl::Seconds(10));
  // Reads until end of file (every writer closed); returns what was read.
  std::string ReadAll(absl::Duration timeout = absl::Seconds(10));

  void CloseRead();
  void CloseWrite();
  int read_fd() const { return fds_[0]; }
  int write_fd() const { return fds_[1]; }

 private:
  int fds_[2];
};

// A forked child running `body`; its exit status is body's return value.
class Child {
 public:
  static Child Fork(const std::function<int()>& body);
  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  // Kills (SIGKILL) and reaps the child if the test did not wait for it.
  ~Child();

  pid_t pid() const { return pid_; }
  // Lets the child outlive this object (e.g. a grandchild that must survive
  // its parent); returns its pid.
  pid_t Detach() { return std::exchange(pid_, -1); }
  // Waits for the child and returns its exit code, or 128+signal.
  int Wait();
  void Kill(int signal_number);

 private:
  explicit Child(pid_t pid) : pid_(pid) {}
  pid_t pid_;
};

// Waits until /proc/locks lists at least `count` blocked flock(2) waiters on
// the file at `path`, at most `timeout`; returns whether it saw them. This is
// how a test knows a waiter is really blocked in the kernel.
bool WaitForBlockedWaiters(const std::string& path, int count = 1,
                           absl::Duration timeout = absl::Seconds(10));

// Waits until /proc/locks lists process `pid` as holding a flock(2) lock on
// the file at `path`, at most `timeout`.
bool WaitForHolder(const std::string& path, pid_t pid,
                   absl::Duration timeout = absl::Seconds(10));

// A fresh directory under TEST_TMPDIR.
std::string MakeTempDir();

// A fresh directory under /tmp, mode 0755, that other users can reach
// (TEST_TMPDIR's parents are private to the user running the tests).
// The caller removes it.
std::string MakeTempDirOtherUsersCanReach();

// The uid and gid of `nobody` (Debian), the other user of cross-user tests.
inline constexpr uid_t kNobodyUid = 65534;

// Switches the calling (forked) process to the `nobody` user; false if that
// is not possible (not root, or a user namespace without it).
bool BecomeNobody();

// Removes the environment variables through which Bazel's test runner
// tracks the test process, so a re-executed test binary does not touch them.
void ForgetTestRunnerFiles();

// Reads a whole file; "" if it cannot be read.
std::string ReadFileOrEmpty(const std::string& path);

// Runs a shell command line with /bin/sh and returns its exit code.
int RunShell(const std::string& command_line);

}  // namespace onlyone::testing

#endif  // ONLYONE_TESTS_TEST_UTIL_H_
