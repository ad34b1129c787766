// Helpers for tests that need real processes: forking a child that runs a
// function, pipes to synchronise with it, and waiting for the kernel to
// report a blocked flock(2) waiter.
//
// Every test binary that links this file runs with onlyone's system
// directories (/run/lock, /tmp, /run/user) moved by ONLYONE_TEST_ROOT to a
// tree of its own, made at start-up by MakeTestRoot() and removed when the
// process that made it exits; processes the tests start inherit it. So no
// test touches the machine's real lock directories.
//
// In the sanitizer builds (tools/test --config=asan|tsan), the programs a
// test binary starts write their sanitizer reports to files under
// TEST_TMPDIR rather than to the stderr a test may read as their output, and
// the test binary fails at its end, showing each report. Every report also
// ends its process with exit code 86 (.bazelrc), which no test expects.
//
// The children run the function and _exit() with its return value, so they
// never return into GoogleTest. Tests synchronise through pipes (a child
// writes a byte when it holds a lock, then blocks until the test writes
// back), never through sleeps.

#ifndef ONLYONE_TESTS_TEST_UTIL_H_
#define ONLYONE_TESTS_TEST_UTIL_H_

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
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

// A child that locks `path` (creating it, mode 0600) with plain flock(2)
// and writes no record, like flock(1): it sends on `ready` once it holds
// the lock and keeps it until the test sends on `release`. Exits 0, or 2
// if it could not lock.
Child HoldWithRawFlock(const std::string& path, Pipe& ready, Pipe& release);

// The pids of the holder a refusal carries (lib/lock_holder.h), in its
// order; empty when it carries none.
std::vector<pid_t> CarriedPids(const absl::Status& status);

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

// Makes a fresh tree under /tmp (mode 0755, so other users can reach it)
// that stands for a machine's system directories: ROOT/run/lock and
// ROOT/tmp (mode 01777, like the real ones), ROOT/run/user (0755). The
// caller removes it with RemoveTree().
std::string MakeTestRoot();

// Removes `path` and everything below it (never following symlinks).
void RemoveTree(const std::string& path);

// Sets (or with nullopt unsets) an environment variable for a scope, and
// restores its old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

  // Puts the old value back now (the destructor does it again: harmless).
  void Restore();

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// A machine of its own for one test: a fresh MakeTestRoot() that
// ONLYONE_TEST_ROOT points at (for this process, which is told to read it
// again, and the programs it starts) while the object lives, removed
// afterwards.
class ScopedTestRoot {
 public:
  ScopedTestRoot();
  ~ScopedTestRoot();

  const std::string& path() const { return root_; }
  // `system_path` ("/run/lock") inside this root.
  std::string operator()(absl::string_view system_path) const;
  // The user scope's directory of the effective user.
  std::string UserDirectory() const;

 private:
  const std::string root_;
  ScopedEnv env_;
};

// Counters in memory shared with forked children, outside any lock: an
// overlap check that does not trust the lock it checks. Entering a section
// increments `inside` and raises `most_inside`; leaving decrements.
struct SharedCounters {
  std::atomic<int> inside{0};
  std::atomic<int> most_inside{0};

  void Enter() {
    const int now_inside = ++inside;
    int most = most_inside;
    while (now_inside > most &&
           !most_inside.compare_exchange_weak(most, now_inside)) {
    }
  }
  void Leave() { --inside; }
};

// A SharedCounters in a MAP_SHARED anonymous page (children forked after
// see the same one); nullptr if mmap failed. Unmap with munmap(p,
// sizeof(SharedCounters)).
SharedCounters* MapSharedCounters();

// Reads a whole file; "" if it cannot be read.
std::string ReadFileOrEmpty(const std::string& path);

// The signals each thread of this process other than the calling one blocks
// (SigBlk of /proc/self/task/TID/status), by thread id.
std::vector<std::pair<pid_t, uint64_t>> OtherThreadsBlockedSignals();

// Whether `mask` (a SigBlk) blocks SIGCHLD and SIGTERM, the process-directed
// signals the library's own threads must never take.
bool BlocksProcessSignals(uint64_t mask);

// Runs a shell command line with /bin/sh and returns its exit code.
int RunShell(const std::string& command_line);

// Mounts a bindfs (FUSE) view of the directory `source` at `mount_point`
// (made if missing), for tests on a filesystem where flock(2) cannot be
// trusted. Returns "" once mounted, else why it could not be (no
// /dev/fuse, no bindfs, not allowed), for the test to skip with.
std::string MountBindfs(const std::string& source,
                        const std::string& mount_point);

// Unmounts what MountBindfs() mounted at `mount_point` and removes the
// mount point directory.
void UnmountBindfs(const std::string& mount_point);

}  // namespace onlyone::testing

#endif  // ONLYONE_TESTS_TEST_UTIL_H_
