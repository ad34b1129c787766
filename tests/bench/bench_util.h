// What the benchmark programs in tests/bench (lock_bench, instance_bench,
// cli_bench, syscall_cost) share: failing loudly, the clock, percentiles,
// the table that sets each figure of onlyone next to the raw system calls
// doing the same job, a description of the machine, a temporary directory,
// and forked helper processes that synchronise through pipes and report
// through shared memory.
//
// The programs are plain binaries, not tests. Any failure of their set-up or
// of a system call ends the run at once with exit status 2 (Die), so that a
// broken run is never mistaken for a slow one.

#ifndef ONLYONE_TESTS_BENCH_BENCH_UTIL_H_
#define ONLYONE_TESTS_BENCH_BENCH_UTIL_H_

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace onlyone::bench {

// ---------------------------------------------------------------------------
// Failing.

// Prints "PROGRAM: what" to stderr, removes the run's TempDir (in the process
// that made it) and exits with status 2. Safe in a forked child.
[[noreturn]] void Die(absl::string_view what);

// Die(), with strerror(errno) after `what`.
[[noreturn]] void DieErrno(absl::string_view what);

// ---------------------------------------------------------------------------
// Flags.

// An integer flag "--name=N" of a benchmark and the variable it sets.
struct IntFlag {
  absl::string_view prefix;  // "--name="
  int* value;
};

// Parses a benchmark's command line: "--fail_on_miss" (sets `fail_on_miss`:
// exit 1 when a target is missed), the integer `flags` (N > 0), and the
// arguments `own_flag` takes (it returns false for one it does not know).
// Dies on any other argument, or on a bad value.
void ParseCommandLine(
    int argc, char** argv, bool& fail_on_miss, absl::Span<const IntFlag> flags,
    const std::function<bool(absl::string_view)>& own_flag = nullptr);

// ---------------------------------------------------------------------------
// Measuring.

// The time on `clock` in nanoseconds.
int64_t NowNs(clockid_t clock = CLOCK_MONOTONIC);

// Minor page faults so far, of the process (RUSAGE_SELF) or of the calling
// thread (RUSAGE_THREAD): on virtual machines a fault is slow enough to
// dominate a first call.
int64_t MinorFaults(int who = RUSAGE_SELF);

// The median; the mean of the two middle values when there is an even
// number of them.
double Median(std::vector<double> values);

// The nearest-rank percentile, p in (0, 100]; 0 when there are no values.
double Percentile(std::vector<double> values, double p);

// ---------------------------------------------------------------------------
// The results table: one row per figure, onlyone next to the raw system
// calls, with the ratio, the target and whether it was met.

struct Row {
  std::string metric;
  std::string onlyone;
  std::string raw;
  std::string ratio;
  std::string target;
  std::string verdict;  // PASS, MISS or "-"
};

// ours / raw to two decimals, or "n/a" when raw is not positive.
std::string Ratio(double ours, double raw);

// "PASS" or "MISS".
std::string Verdict(bool pass);

// A row for a figure whose target is a ratio to the raw figure: `ours` and
// `raw` are the figures, shown as `ours_text` and `raw_text`. With
// `target_ratio` 0 the row is for information only (target and verdict "-").
Row RatioRow(std::string metric, std::string ours_text, std::string raw_text,
             double ours, double raw, double target_ratio);

// Adds a p50 and a p99 row for two sets of timings in nanoseconds, shown in
// microseconds. The target ratio (0: none) applies to the p50 row: the p99
// of a few thousand runs on a shared machine is for information.
void AddLatencyRows(std::vector<Row>& rows, const std::string& p50_metric,
                    const std::string& p99_metric,
                    const std::vector<double>& ours_ns,
                    const std::vector<double>& raw_ns, double target_ratio);

// Latencies of onlyone ('s') and of the raw recipe ('r') taken in turn, so
// that both see the same state of the machine: `warmups` unrecorded rounds
// of each, then `rounds` recorded ones. `measure(variant)` returns one
// latency in ns.
struct AlternateSamples {
  std::vector<double> ours, raw;
};
AlternateSamples SampleAlternately(
    int warmups, int rounds,
    const std::function<double(char variant)>& measure);

// Prints the rows as a Markdown table (docs/performance.md quotes it as it
// is); `metric_header` heads the first column.
void PrintTable(absl::string_view metric_header, const std::vector<Row>& rows);

// How many rows say MISS.
int CountMisses(const std::vector<Row>& rows);

// ---------------------------------------------------------------------------
// The machine: figures mean little without it.

// A whole file, "" if it cannot be read; for /proc files, whose size stat(2)
// does not tell.
std::string ReadWholeFile(const std::string& path);

// "2 CPUs (AMD EPYC), kernel 6.1.0".
std::string MachineSummary();

// /proc/loadavg, with its newline: printed at the start and at the end, as
// a sign of other load that disturbed the run.
std::string LoadAverage();

// ---------------------------------------------------------------------------
// A fresh directory PARENT/NAME.XXXXXX (PARENT by default $TMPDIR, or /tmp),
// removed with everything in it when the object goes, or by Die(). Only the
// process that made it removes it, never a forked child's copy. One at a
// time.

class TempDir {
 public:
  explicit TempDir(absl::string_view name, absl::string_view parent = "");
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::string& path() const { return path_; }
  // PATH/name.
  std::string File(absl::string_view name) const;

  // Removes the current TempDir, if any: for Die().
  static void RemoveCurrent();

 private:
  void Remove();

  static inline TempDir* current_ = nullptr;
  std::string path_;
  pid_t owner_;
  bool removed_ = false;
};

// ---------------------------------------------------------------------------
// Helper processes.

// Both ends of a pipe(2), close-on-exec; closed by hand, since a forked child
// closes the end it does not use.
struct Pipe {
  int read_end = -1;
  int write_end = -1;
};
Pipe MakePipe();

void WriteByte(int fd, char c);
// Returns the byte read, or 0 at end of file.
char ReadByte(int fd);
// Dies unless the next byte is `expected`; `context` names the exchange.
void ExpectByte(int fd, char expected, absl::string_view context);

// Forks a child that runs `body` and _exit()s with its result. The child dies
// with the parent, so an aborted run leaves no helper processes behind.
pid_t ForkChild(const std::function<int()>& body);

// Waits for `pid`; dies unless it exited with status 0 (`what` names it).
// Fills `usage` from wait4(2) when given: the child's whole CPU time and
// faults.
void WaitChild(pid_t pid, absl::string_view what,
               struct rusage* usage = nullptr);

// A T in anonymous shared memory, which fork()ed children share with the
// parent: how a child reports its own timings.
template <typename T>
T* MapShared() {
  void* memory = mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) DieErrno("mmap");
  return new (memory) T();
}

template <typename T>
void UnmapShared(T* shared) {
  shared->~T();
  munmap(shared, sizeof(T));
}

}  // namespace onlyone::bench

#endif  // ONLYONE_TESTS_BENCH_BENCH_UTIL_H_
