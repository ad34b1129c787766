// syscall_cost: what the system calls on onlyone's lock path cost on this
// machine, to read lock_bench's ratios against (docs/performance.md).
//
//   bazel run -c opt //tests/bench:syscall_cost
//
// Each line is the median of 5 rounds of 100000 calls. The last lines replay
// the exact system-call sequence of an uncontended ScopedFileLock
// Acquire+Release (as strace shows it) without any of the library's own
// code, next to the raw open+flock+flock+close sequence: if the replay costs
// about what lock_bench measures for onlyone, the system calls are the cost.

#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/bench/bench_util.h"

namespace onlyone::bench {
namespace {

template <typename Fn>
double MedianNsPerCall(Fn fn) {
  constexpr int kCalls = 100000;
  std::vector<double> rounds;
  for (int round = 0; round < 5; ++round) {
    const int64_t start = NowNs();
    for (int i = 0; i < kCalls; ++i) fn();
    rounds.push_back(static_cast<double>(NowNs() - start) / kCalls);
  }
  return Median(rounds);
}

}  // namespace
}  // namespace onlyone::bench

int main() {
  using namespace onlyone::bench;  // NOLINT
  TempDir dir("onlyone_syscall_cost");
  const std::string path = dir.File("cost.lock");
  const char* p = path.c_str();
  int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) DieErrno("open");
  struct stat st;
  constexpr int kOnlyoneFlags =
      O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;

  struct Line {
    const char* name;
    double ns;
  };
  std::vector<Line> lines = {
      {"getpid()", MedianNsPerCall([] { syscall(SYS_getpid); })},
      {"gettid()", MedianNsPerCall([] { syscall(SYS_gettid); })},
      {"fstat(fd)", MedianNsPerCall([&] { fstat(fd, &st); })},
      {"lstat(path)", MedianNsPerCall([&] { lstat(p, &st); })},
      {"open(path) + close", MedianNsPerCall([&] {
         close(open(p, kOnlyoneFlags));
       })},
      {"flock(LOCK_EX|LOCK_NB) + flock(LOCK_UN)", MedianNsPerCall([&] {
         flock(fd, LOCK_EX | LOCK_NB);
         flock(fd, LOCK_UN);
       })},
      {"raw: open + flock(EX) + flock(UN) + close (4 calls)",
       MedianNsPerCall([&] {
         int f = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
         flock(f, LOCK_EX);
         flock(f, LOCK_UN);
         close(f);
       })},
      {"onlyone's 4 calls replayed without the library", MedianNsPerCall([&] {
         int f = open(p, kOnlyoneFlags);
         flock(f, LOCK_EX | LOCK_NB);
         fstat(f, &st);
         close(f);
       })},
  };

  // A first write to an anonymous page: the cost of a minor page fault.
  {
    constexpr int kPages = 4096;
    const long page = sysconf(_SC_PAGESIZE);
    char* mem = static_cast<char*>(mmap(nullptr, kPages * page,
                                        PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (mem == MAP_FAILED) DieErrno("mmap");
    const int64_t start = NowNs();
    for (int i = 0; i < kPages; ++i) mem[i * page] = 1;
    lines.push_back({"minor page fault (first write to an anonymous page)",
                     static_cast<double>(NowNs() - start) / kPages});
    munmap(mem, kPages * page);
  }

  close(fd);
  for (const Line& line : lines) printf("%-55s %8.0f ns\n", line.name, line.ns);
  return 0;
}
