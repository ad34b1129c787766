// critical_section: RunExclusive and Exclusive keep a read-modify-write of a
// shared counter file correct across threads and processes.
//
//   critical_section [--processes=3] [--threads=4] [--increments=100]
//                    [--dir=DIR]
//
// Forks --processes workers; each runs --threads threads; each thread adds 1
// to the number in DIR/counter --increments times, alternating between
// RunExclusive and one Exclusive callable that all its process's threads
// share. An increment reads the number, yields the CPU and writes the number
// plus one, so without the lock increments would be lost. Finally the parent
// reads the count under a shared lock, prints it and exits 0 if it equals
// processes * threads * increments, 1 if not. Without --dir it works in a
// new temporary directory and removes it afterwards.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "onlyone/exclusive.h"
#include "onlyone/scoped_file_lock.h"

ABSL_FLAG(int, processes, 3, "Worker processes to fork.");
ABSL_FLAG(int, threads, 4, "Threads in each worker process.");
ABSL_FLAG(int, increments, 100, "Increments done by each thread.");
ABSL_FLAG(std::string, dir, "",
          "Directory for the lock and counter files (default: a new "
          "temporary directory, removed at the end).");

namespace {

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

// Reads the decimal number in the file at `path`; an empty file counts as 0.
absl::StatusOr<int64_t> ReadNumber(int fd, const std::string& path) {
  char buffer[32];
  const ssize_t size = pread(fd, buffer, sizeof(buffer) - 1, 0);
  if (size < 0) return Errno("read", path);
  absl::string_view text(buffer, static_cast<size_t>(size));
  int64_t value = 0;
  if (!text.empty() && !absl::SimpleAtoi(text, &value)) {
    return absl::DataLossError(absl::StrCat(path, ": not a number: ", text));
  }
  return value;
}

// Adds one to the counter file: a read-modify-write that is only correct
// while the caller holds the lock. Returns the new value.
absl::StatusOr<int64_t> IncrementCounter(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("open", path);
  absl::StatusOr<int64_t> value = ReadNumber(fd, path);
  if (value.ok()) {
    std::this_thread::yield();  // invite another writer in: the lock stops it
    ++*value;
    const std::string text = absl::StrCat(*value, "\n");
    if (pwrite(fd, text.data(), text.size(), 0) !=
        static_cast<ssize_t>(text.size())) {
      value = Errno("write", path);
    }
  }
  close(fd);
  return value;
}

// Reads the counter; a plain int64_t result, to show how RunExclusive wraps
// it. Exits on error, which only a broken setup can cause.
int64_t ReadCount(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  absl::StatusOr<int64_t> value =
      fd < 0 ? Errno("open", path) : ReadNumber(fd, path);
  if (fd >= 0) close(fd);
  if (!value.ok()) {
    std::cerr << "critical_section: " << value.status() << std::endl;
    std::exit(1);
  }
  return *value;
}

// One worker process: `threads` threads, each doing `increments` increments.
// Returns the exit code.
int RunWorker(const std::string& lock_path, const std::string& counter_path,
              int threads, int increments) {
  // Exclusive: a callable that takes the lock at every call. Its function
  // returns absl::Status, so the callable returns absl::Status too: a lock
  // failure and an increment failure arrive the same way.
  auto increment = onlyone::Exclusive(
      lock_path, {}, [](const std::string& counter) -> absl::Status {
        return IncrementCounter(counter).status();
      });

  absl::Mutex mu;
  absl::Status first_error;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, increment]() mutable {
      for (int i = 0; i < increments; ++i) {
        absl::Status status;
        if (i % 2 == 0) {
          // RunExclusive: IncrementCounter returns absl::StatusOr<int64_t>,
          // which RunExclusive returns unchanged (no StatusOr<StatusOr<>>).
          absl::StatusOr<int64_t> value = onlyone::RunExclusive(
              lock_path, {}, IncrementCounter, counter_path);
          status = value.status();
        } else {
          status = increment(counter_path);
        }
        if (!status.ok()) {
          absl::MutexLock lock(&mu);
          if (first_error.ok()) first_error = status;
          return;
        }
      }
    });
  }
  for (std::thread& thread : pool) thread.join();
  if (!first_error.ok()) {
    std::cerr << "critical_section: pid " << getpid() << ": " << first_error
              << std::endl;
    return 1;
  }
  return 0;
}

// Forks the workers (before any thread exists), waits for them and checks
// the count. Returns the exit code.
int RunCriticalSection(const std::string& dir, int processes, int threads,
                       int increments) {
  const std::string lock_path = dir + "/counter.lock";
  const std::string counter_path = dir + "/counter";
  const int64_t expected = int64_t{processes} * threads * increments;

  std::vector<pid_t> workers;
  for (int p = 0; p < processes; ++p) {
    const pid_t pid = fork();
    if (pid < 0) {
      std::cerr << "critical_section: fork: " << std::strerror(errno)
                << std::endl;
      break;
    }
    if (pid == 0) {
      std::cout.flush();
      _exit(RunWorker(lock_path, counter_path, threads, increments));
    }
    workers.push_back(pid);
  }
  bool workers_ok = workers.size() == static_cast<size_t>(processes);
  for (pid_t pid : workers) {
    int wait_status = 0;
    if (waitpid(pid, &wait_status, 0) != pid || !WIFEXITED(wait_status) ||
        WEXITSTATUS(wait_status) != 0) {
      workers_ok = false;
    }
  }

  // A shared lock is enough to read. ReadCount returns a plain int64_t, so
  // RunExclusive returns absl::StatusOr<int64_t>.
  onlyone::LockOptions shared;
  shared.mode = onlyone::LockMode::kShared;
  absl::StatusOr<int64_t> count =
      onlyone::RunExclusive(lock_path, shared, ReadCount, counter_path);
  if (!count.ok()) {
    std::cerr << "critical_section: " << count.status() << std::endl;
    return 1;
  }
  const bool correct = workers_ok && *count == expected;
  std::cout << "final count " << *count << ", expected " << expected << " ("
            << processes << " processes x " << threads << " threads x "
            << increments << " increments): "
            << (correct ? "OK" : "WRONG") << std::endl;
  return correct ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Increments a counter file from threads of several processes under "
      "onlyone::RunExclusive / onlyone::Exclusive and checks the total.");
  absl::ParseCommandLine(argc, argv);
  const int processes = absl::GetFlag(FLAGS_processes);
  const int threads = absl::GetFlag(FLAGS_threads);
  const int increments = absl::GetFlag(FLAGS_increments);
  if (processes < 1 || threads < 1 || increments < 0) {
    std::cerr << "critical_section: --processes and --threads must be >= 1, "
                 "--increments >= 0"
              << std::endl;
    return 64;  // EX_USAGE
  }

  std::string dir = absl::GetFlag(FLAGS_dir);
  const bool temporary = dir.empty();
  if (temporary) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp",
                                       "/critical_section.XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) {
      std::cerr << "critical_section: mkdtemp: " << std::strerror(errno)
                << std::endl;
      return 1;
    }
    dir = pattern;
  }
  const int exit_code = RunCriticalSection(dir, processes, threads, increments);
  if (temporary) {
    // Nobody uses these files any more; a lock file in use is never removed.
    unlink((dir + "/counter").c_str());
    unlink((dir + "/counter.lock").c_str());
    rmdir(dir.c_str());
  }
  return exit_code;
}
