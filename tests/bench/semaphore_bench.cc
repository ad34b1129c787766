// semaphore_bench: ScopedSemaphore next to the raw flock(2) calls doing the
// same job, and portalocker's BoundedSemaphore for scale, in one run:
//  1. uncontended Acquire+Release (3 slots) vs open+flock+close of one slot
//     file (target <= 1.5x);
//  2. hand-off: every permit held, a waiter blocked, one permit released ->
//     the waiter returns; vs a raw blocked flock(2) hand-off (target p50
//     <= 2x); and portalocker's BoundedSemaphore hand-off (information);
//  3. CPU and context switches of a waiter blocked 1 s (target <= 2 ms);
//  4. 8 processes x 3 slots x 2000 sections: the most inside at once (must
//     be <= 3) and sections/s.
// Run: bazel run -c opt //tests/bench:semaphore_bench [-- --fail_on_miss]
// Figures: docs/performance.md, "ScopedSemaphore: semaphore_bench".

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "onlyone/scoped_semaphore.h"
#include "tests/bench/bench_util.h"

namespace onlyone::bench {
namespace {

constexpr int kSlots = 3;
constexpr char kPython[] = "/usr/bin/python3";

ScopedSemaphore Take(const std::string& path) {
  absl::StatusOr<ScopedSemaphore> permit =
      ScopedSemaphore::Acquire(path, kSlots);
  if (!permit.ok()) Die(permit.status().ToString());
  return *std::move(permit);
}

// Waits until `pid` has `count` blocked flock(2) waits in /proc/locks (the
// set-up of a hand-off, not part of the timing).
void WaitUntilBlocked(pid_t pid, int count) {
  const std::string pid_field = absl::StrCat(" ", pid, " ");
  const int64_t give_up = NowNs() + 10'000'000'000;
  for (;;) {
    int blocked = 0;
    for (absl::string_view line :
         absl::StrSplit(ReadWholeFile("/proc/locks"), '\n')) {
      if (absl::StrContains(line, "-> FLOCK") &&
          absl::StrContains(line, pid_field)) {
        ++blocked;
      }
    }
    if (blocked >= count) return;
    if (NowNs() > give_up) Die(absl::StrFormat("pid %d never blocked", pid));
    usleep(200);
  }
}

void BenchUncontended(const TempDir& dir, std::vector<Row>& rows) {
  const std::string path = dir.File("uncontended");
  const std::string raw_path = dir.File("raw.00.lock");
  constexpr int kIterations = 20000, kBlock = 1000;
  std::vector<double> ours, raw;
  for (int round = 0; round < kIterations / kBlock; ++round) {
    int64_t start = NowNs();
    for (int i = 0; i < kBlock; ++i) {
      absl::StatusOr<ScopedSemaphore> permit =
          ScopedSemaphore::Acquire(path, kSlots);
      if (!permit.ok() || !permit->Release().ok()) Die("uncontended acquire");
    }
    ours.push_back(static_cast<double>(NowNs() - start) / kBlock);
    start = NowNs();
    for (int i = 0; i < kBlock; ++i) {
      const int fd = open(raw_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) != 0) DieErrno("raw lock");
      close(fd);
    }
    raw.push_back(static_cast<double>(NowNs() - start) / kBlock);
  }
  // The core lock alone on the same slot file, for where the time goes.
  std::vector<double> core;
  const std::string slot_path = ScopedSemaphore::SlotPath(path, 0);
  for (int round = 0; round < kIterations / kBlock; ++round) {
    const int64_t start = NowNs();
    for (int i = 0; i < kBlock; ++i) {
      absl::StatusOr<ScopedFileLock> lock = ScopedFileLock::Acquire(slot_path);
      if (!lock.ok() || !lock->Release().ok()) Die("core lock");
    }
    core.push_back(static_cast<double>(NowNs() - start) / kBlock);
  }
  const double ours_ns = Median(ours), raw_ns = Median(raw);
  rows.push_back(RatioRow("uncontended ScopedFileLock of slot 0 (us)",
                          absl::StrFormat("%.2f", Median(core) / 1000),
                          absl::StrFormat("%.2f", raw_ns / 1000),
                          Median(core), raw_ns, 0));
  rows.push_back(RatioRow("uncontended acquire+release (us)",
                          absl::StrFormat("%.2f", ours_ns / 1000),
                          absl::StrFormat("%.2f", raw_ns / 1000), ours_ns,
                          raw_ns, 1.5));
}

struct HandoffShared {
  std::atomic<int64_t> acquired_ns{0};
};

void BenchHandoff(const TempDir& dir, int handoffs, std::vector<Row>& rows) {
  const std::string path = dir.File("handoff");
  const std::string raw_path = dir.File("handoff_raw.lock");
  auto* shared = MapShared<HandoffShared>();
  Pipe command = MakePipe(), reply = MakePipe();
  const pid_t waiter = ForkChild([&] {
    close(command.write_end);
    close(reply.read_end);
    for (;;) {
      const char variant = ReadByte(command.read_end);
      if (variant == 'q' || variant == 0) return 0;
      WriteByte(reply.write_end, 'r');
      if (variant == 's') {
        ScopedSemaphore permit = Take(path);
        shared->acquired_ns.store(NowNs(), std::memory_order_release);
        if (!permit.Release().ok()) Die("waiter release");
      } else {
        const int fd = open(raw_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) DieErrno("open");
        while (flock(fd, LOCK_EX) != 0) {
          if (errno != EINTR) DieErrno("flock");
        }
        shared->acquired_ns.store(NowNs(), std::memory_order_release);
        close(fd);
      }
      WriteByte(reply.write_end, 'd');
    }
  });
  close(command.read_end);
  close(reply.write_end);
  auto handoff_ns = [&](char variant) -> double {
    std::vector<ScopedSemaphore> permits;
    int raw_fd = -1;
    if (variant == 's') {
      for (int i = 0; i < kSlots; ++i) permits.push_back(Take(path));
    } else {
      raw_fd = open(raw_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
      if (raw_fd < 0 || flock(raw_fd, LOCK_EX) != 0) DieErrno("raw hold");
    }
    WriteByte(command.write_end, variant);
    ExpectByte(reply.read_end, 'r', "hand-off");
    WaitUntilBlocked(waiter, variant == 's' ? kSlots : 1);
    const int64_t released = NowNs();
    if (variant == 's') {
      if (!permits[1].Release().ok()) Die("release");
    } else {
      close(raw_fd);
    }
    ExpectByte(reply.read_end, 'd', "hand-off");
    return static_cast<double>(
        shared->acquired_ns.load(std::memory_order_acquire) - released);
  };
  const AlternateSamples samples =
      SampleAlternately(/*warmups=*/20, handoffs, handoff_ns);
  WriteByte(command.write_end, 'q');
  WaitChild(waiter, "hand-off waiter");
  close(command.write_end);
  close(reply.read_end);
  UnmapShared(shared);
  AddLatencyRows(rows, "hand-off p50, 3 slots (us)",
                 "hand-off p99, 3 slots (us)", samples.ours, samples.raw,
                 2.0);
}

// portalocker's BoundedSemaphore waiting for a permit that we release at a
// phase spread over its 0.25 s check interval.
constexpr char kPortalockerWaiter[] = R"(
import os, sys, time, portalocker
rounds = int(sys.argv[3])
for _ in range(rounds):
    if os.read(0, 1) != b"n":
        sys.exit(1)
    s = portalocker.BoundedSemaphore(3, name=sys.argv[1], directory=sys.argv[2],
                                     timeout=30)
    os.write(4, b"r")
    s.acquire()
    os.write(4, (str(time.clock_gettime_ns(time.CLOCK_MONOTONIC)) + "\n").encode())
    s.release()
)";

void BenchPortalocker(const TempDir& dir, std::vector<Row>& rows) {
  constexpr int kRounds = 20;
  const std::string path = dir.File("portalocker");
  Pipe command = MakePipe(), reply = MakePipe();
  const pid_t python = ForkChild([&] {
    dup2(command.read_end, 0);
    dup2(reply.write_end, 4);
    const int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    dup2(null, 1);
    const std::string rounds = absl::StrCat(kRounds);
    execl(kPython, kPython, "-c", kPortalockerWaiter, "portalocker",
          dir.path().c_str(), rounds.c_str(), nullptr);
    DieErrno("exec python3");
    return 127;
  });
  close(command.read_end);
  close(reply.write_end);
  std::vector<double> latency;
  for (int round = 0; round < kRounds; ++round) {
    // Every permit is ours before the waiter starts its round (Take() waits
    // for the one it kept from the last round): a permit it found free
    // would be "handed off" before we released it.
    std::vector<ScopedSemaphore> permits;
    for (int i = 0; i < kSlots; ++i) permits.push_back(Take(path));
    WriteByte(command.write_end, 'n');
    ExpectByte(reply.read_end, 'r', "portalocker");
    usleep(300000 + 250000 * round / kRounds);  // its first tries fail
    const int64_t released = NowNs();
    if (!permits[0].Release().ok()) Die("release");
    std::string line;
    for (char c; (c = ReadByte(reply.read_end)) != '\n';) {
      if (c == 0) Die("portalocker waiter ended");
      line += c;
    }
    int64_t acquired;
    if (!absl::SimpleAtoi(line, &acquired)) Die("portalocker's reply: " + line);
    latency.push_back(static_cast<double>(acquired - released));
    permits.clear();
  }
  close(command.write_end);
  WaitChild(python, "portalocker waiter");
  close(reply.read_end);
  std::sort(latency.begin(), latency.end());
  rows.push_back(Row{"portalocker BoundedSemaphore hand-off p50 (ms)",
                     absl::StrFormat("%.1f", Percentile(latency, 50) / 1e6),
                     "-", "-", "-", "-"});
  rows.push_back(Row{"portalocker BoundedSemaphore hand-off max (ms)",
                     absl::StrFormat("%.1f", latency.back() / 1e6), "-", "-",
                     "-", "-"});
}

struct CpuShared {
  std::atomic<int64_t> cpu_ns{0};
  std::atomic<int64_t> voluntary{0};
  std::atomic<int64_t> involuntary{0};
};

// The waiter's whole process: its threads' CPU from before Acquire() to
// after it returned, blocked about 1 s.
void BenchWaiterCpu(const TempDir& dir, std::vector<Row>& rows) {
  const std::string path = dir.File("cpu");
  auto* shared = MapShared<CpuShared>();
  std::vector<ScopedSemaphore> permits;
  for (int i = 0; i < kSlots; ++i) permits.push_back(Take(path));
  Pipe ready = MakePipe();
  const pid_t waiter = ForkChild([&] {
    close(ready.read_end);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    WriteByte(ready.write_end, 'r');
    ScopedSemaphore permit = Take(path);
    getrusage(RUSAGE_SELF, &after);
    auto ns = [](const struct rusage& u) {
      return (int64_t{u.ru_utime.tv_sec} + u.ru_stime.tv_sec) * 1000000000 +
             (int64_t{u.ru_utime.tv_usec} + u.ru_stime.tv_usec) * 1000;
    };
    shared->cpu_ns = ns(after) - ns(before);
    shared->voluntary = after.ru_nvcsw - before.ru_nvcsw;
    shared->involuntary = after.ru_nivcsw - before.ru_nivcsw;
    return 0;
  });
  close(ready.write_end);
  ExpectByte(ready.read_end, 'r', "cpu waiter");
  WaitUntilBlocked(waiter, kSlots);
  usleep(1000000);  // the measured wait
  permits.clear();
  WaitChild(waiter, "cpu waiter");
  close(ready.read_end);
  const double cpu_ms = shared->cpu_ns / 1e6;
  rows.push_back(Row{"CPU of a waiter blocked 1 s (ms)",
                     absl::StrFormat("%.3f", cpu_ms), "-", "-", "<= 2",
                     Verdict(cpu_ms <= 2)});
  rows.push_back(Row{"its context switches, voluntary / involuntary",
                     absl::StrFormat("%d / %d", shared->voluntary.load(),
                                     shared->involuntary.load()),
                     "-", "-", "-", "-"});
  UnmapShared(shared);
}

struct CounterShared {
  std::atomic<int> inside{0};
  std::atomic<int> most_inside{0};
};

bool BenchCounter(const TempDir& dir, std::vector<Row>& rows) {
  constexpr int kProcesses = 8, kSections = 2000;
  const std::string path = dir.File("counter");
  auto* shared = MapShared<CounterShared>();
  const int64_t start = NowNs();
  std::vector<pid_t> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(ForkChild([&] {
      for (int section = 0; section < kSections; ++section) {
        ScopedSemaphore permit = Take(path);
        const int now_inside = ++shared->inside;
        int most = shared->most_inside;
        while (now_inside > most &&
               !shared->most_inside.compare_exchange_weak(most, now_inside)) {
        }
        // A few microseconds inside, so that sections overlap.
        const int64_t until = NowNs() + 5000;
        while (NowNs() < until) {
        }
        --shared->inside;
        if (!permit.Release().ok()) Die("release");
      }
      return 0;
    }));
  }
  for (pid_t worker : workers) WaitChild(worker, "counter worker");
  const double seconds = (NowNs() - start) / 1e9;
  const int most = shared->most_inside;
  rows.push_back(Row{"8 processes x 3 slots: most inside at once",
                     absl::StrCat(most), "-", "-", "<= 3",
                     Verdict(most <= kSlots)});
  rows.push_back(Row{"8 processes x 3 slots: sections/s",
                     absl::StrFormat("%.0f", kProcesses * kSections / seconds),
                     "-", "-", "-", "-"});
  UnmapShared(shared);
  return most <= kSlots;
}

}  // namespace
}  // namespace onlyone::bench

int main(int argc, char** argv) {
  using namespace onlyone::bench;  // NOLINT
  bool fail_on_miss = false;
  int handoffs = 1000;
  const IntFlag flags[] = {{"--handoffs=", &handoffs}};
  ParseCommandLine(argc, argv, fail_on_miss, flags);
  signal(SIGPIPE, SIG_IGN);
  absl::PrintF("semaphore_bench: %s\n", MachineSummary());
  absl::PrintF("  load average at start: %s", LoadAverage());
  const int64_t start = NowNs();
  TempDir dir("onlyone_semaphore_bench");
  std::vector<Row> rows;
  BenchUncontended(dir, rows);
  BenchHandoff(dir, handoffs, rows);
  BenchWaiterCpu(dir, rows);
  const bool bounded = BenchCounter(dir, rows);
  BenchPortalocker(dir, rows);
  absl::PrintF("\n");
  PrintTable("metric", rows);
  const int missed = CountMisses(rows);
  absl::PrintF("\n%d target(s) missed; took %.1f s; load average at end: %s",
               missed, (NowNs() - start) / 1e9, LoadAverage());
  if (!bounded) return 1;
  return missed > 0 && fail_on_miss ? 1 : 0;
}
