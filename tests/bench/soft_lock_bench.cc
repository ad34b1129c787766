// soft_lock_bench: SoftFileLock next to the raw system calls doing the same
// job, and py-filelock's SoftFileLock for scale, in one run:
//  1. uncontended Acquire+Release vs link(2)+unlink(2) of a ready file;
//  2. same-host hand-off: a waiter blocked in Acquire(), the holder
//     releases -> the waiter returns; vs a raw waiter blocked reading
//     inotify that link(2)s as soon as the holder's unlink(2) shows;
//  3. py-filelock's SoftFileLock (python3-filelock) waiting for a lock file
//     that we remove: it polls every 50 ms.
// No target: the soft lock is for filesystems where flock(2) cannot be
// trusted, and its figures are there to size it (docs/performance.md).
// Run: bazel run -c opt //tests/bench:soft_lock_bench [-- --handoffs=N]

#include <fcntl.h>
#include <signal.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "onlyone/soft_file_lock.h"
#include "tests/bench/bench_util.h"

namespace onlyone::bench {
namespace {

constexpr char kPython[] = "/usr/bin/python3";

SoftFileLock Take(const std::string& path) {
  absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path);
  if (!lock.ok()) Die(lock.status().ToString());
  return *std::move(lock);
}

// Waits until `pid` sleeps in the kernel (the set-up of a hand-off, not
// part of the timing): state S in /proc/PID/stat, in poll(2) or in a read
// of inotify (wait_woken).
void WaitUntilSleeping(pid_t pid) {
  const int64_t give_up = NowNs() + 10'000'000'000;
  const std::string stat_path = absl::StrCat("/proc/", pid, "/stat");
  const std::string wchan_path = absl::StrCat("/proc/", pid, "/wchan");
  for (;;) {
    const std::string stat = ReadWholeFile(stat_path);
    const size_t paren = stat.rfind(')');
    const std::string wchan = ReadWholeFile(wchan_path);
    if (paren != std::string::npos && stat.size() > paren + 2 &&
        stat[paren + 2] == 'S' &&
        (absl::StrContains(wchan, "poll") ||
         absl::StrContains(wchan, "inotify") ||
         absl::StrContains(wchan, "wait_woken"))) {
      return;
    }
    if (NowNs() > give_up) Die(absl::StrFormat("pid %d never slept", pid));
    usleep(100);
  }
}

void BenchUncontended(const TempDir& dir, std::vector<Row>& rows) {
  const std::string path = dir.File("uncontended.lock");
  const std::string raw_path = dir.File("raw.lock");
  const std::string ready = dir.File("raw.ready");
  const int ready_fd = open(ready.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (ready_fd < 0) DieErrno("open");
  close(ready_fd);
  constexpr int kIterations = 4000, kBlock = 200;
  std::vector<double> ours, raw;
  for (int round = 0; round < kIterations / kBlock; ++round) {
    int64_t start = NowNs();
    for (int i = 0; i < kBlock; ++i) {
      absl::StatusOr<SoftFileLock> lock = SoftFileLock::Acquire(path);
      if (!lock.ok() || !lock->Release().ok()) Die("uncontended acquire");
    }
    ours.push_back(static_cast<double>(NowNs() - start) / kBlock);
    start = NowNs();
    for (int i = 0; i < kBlock; ++i) {
      if (link(ready.c_str(), raw_path.c_str()) != 0) DieErrno("link");
      if (unlink(raw_path.c_str()) != 0) DieErrno("unlink");
    }
    raw.push_back(static_cast<double>(NowNs() - start) / kBlock);
  }
  const double ours_ns = Median(ours), raw_ns = Median(raw);
  rows.push_back(RatioRow("uncontended acquire+release (us)",
                          absl::StrFormat("%.2f", ours_ns / 1000),
                          absl::StrFormat("%.2f", raw_ns / 1000), ours_ns,
                          raw_ns, 0));
}

struct HandoffShared {
  std::atomic<int64_t> acquired_ns{0};
};

void BenchHandoff(const TempDir& dir, int handoffs, std::vector<Row>& rows) {
  const std::string path = dir.File("handoff.lock");
  const std::string raw_path = dir.File("handoff_raw.lock");
  const std::string raw_mine = dir.File("handoff_raw.mine");
  const std::string raw_theirs = dir.File("handoff_raw.theirs");
  for (const std::string& file : {raw_mine, raw_theirs}) {
    const int fd = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) DieErrno("open");
    close(fd);
  }
  auto* shared = MapShared<HandoffShared>();
  Pipe command = MakePipe(), reply = MakePipe();
  const pid_t waiter = ForkChild([&] {
    close(command.write_end);
    close(reply.read_end);
    for (;;) {
      const char variant = ReadByte(command.read_end);
      if (variant == 'q' || variant == 0) return 0;
      if (variant == 's') {
        WriteByte(reply.write_end, 'r');
        SoftFileLock lock = Take(path);
        shared->acquired_ns.store(NowNs(), std::memory_order_release);
        if (!lock.Release().ok()) Die("waiter release");
      } else {
        // The raw recipe: watch, try, wait for a removal, try again.
        const int inotify = inotify_init1(IN_CLOEXEC);
        if (inotify < 0 ||
            inotify_add_watch(inotify, dir.path().c_str(), IN_DELETE) < 0) {
          DieErrno("inotify");
        }
        WriteByte(reply.write_end, 'r');
        while (link(raw_theirs.c_str(), raw_path.c_str()) != 0) {
          if (errno != EEXIST) DieErrno("link");
          alignas(struct inotify_event) char events[4096];
          if (read(inotify, events, sizeof events) < 0) DieErrno("read");
        }
        shared->acquired_ns.store(NowNs(), std::memory_order_release);
        close(inotify);
        if (unlink(raw_path.c_str()) != 0) DieErrno("unlink");
      }
      WriteByte(reply.write_end, 'd');
    }
  });
  close(command.read_end);
  close(reply.write_end);
  auto handoff_ns = [&](char variant) -> double {
    std::optional<SoftFileLock> lock;
    if (variant == 's') {
      lock.emplace(Take(path));
    } else if (link(raw_mine.c_str(), raw_path.c_str()) != 0) {
      DieErrno("raw hold");
    }
    WriteByte(command.write_end, variant);
    ExpectByte(reply.read_end, 'r', "hand-off");
    WaitUntilSleeping(waiter);
    const int64_t released = NowNs();
    if (variant == 's') {
      if (!lock->Release().ok()) Die("release");
    } else if (unlink(raw_path.c_str()) != 0) {
      DieErrno("raw release");
    }
    ExpectByte(reply.read_end, 'd', "hand-off");
    return static_cast<double>(
        shared->acquired_ns.load(std::memory_order_acquire) - released);
  };
  const AlternateSamples samples =
      SampleAlternately(/*warmups=*/10, handoffs, handoff_ns);
  WriteByte(command.write_end, 'q');
  WaitChild(waiter, "hand-off waiter");
  close(command.write_end);
  close(reply.read_end);
  UnmapShared(shared);
  AddLatencyRows(rows, "same-host hand-off p50 (us)",
                 "same-host hand-off p99 (us)", samples.ours, samples.raw,
                 0);
}

// py-filelock's SoftFileLock waiting for a lock file (its own kind: one made
// with O_CREAT|O_EXCL) that we remove at a phase spread over its 50 ms poll.
constexpr char kFilelockWaiter[] = R"(
import os, sys, time, filelock
rounds = int(sys.argv[2])
for _ in range(rounds):
    lock = filelock.SoftFileLock(sys.argv[1], timeout=30)
    os.write(4, b"r")
    lock.acquire()
    os.write(4, (str(time.clock_gettime_ns(time.CLOCK_MONOTONIC)) + "\n").encode())
    lock.release()
    os.read(0, 1)
)";

void BenchPyFilelock(const TempDir& dir, std::vector<Row>& rows) {
  constexpr int kRounds = 20;
  const std::string path = dir.File("py_filelock.lock");
  Pipe command = MakePipe(), reply = MakePipe();
  // Held before the waiter starts.
  int held = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (held < 0) DieErrno("hold");
  close(held);
  const pid_t python = ForkChild([&] {
    dup2(command.read_end, 0);
    dup2(reply.write_end, 4);
    const int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    dup2(null, 1);
    const std::string rounds = absl::StrCat(kRounds);
    execl(kPython, kPython, "-c", kFilelockWaiter, path.c_str(),
          rounds.c_str(), nullptr);
    DieErrno("exec python3");
    return 127;
  });
  close(command.read_end);
  close(reply.write_end);
  std::vector<double> latency;
  for (int round = 0; round < kRounds; ++round) {
    ExpectByte(reply.read_end, 'r', "py-filelock");
    usleep(100000 + 50000 * round / kRounds);  // its first tries fail
    const int64_t released = NowNs();
    if (unlink(path.c_str()) != 0) DieErrno("release");
    std::string line;
    for (char c; (c = ReadByte(reply.read_end)) != '\n';) {
      if (c == 0) Die("py-filelock waiter ended");
      line += c;
    }
    int64_t acquired;
    if (!absl::SimpleAtoi(line, &acquired)) Die("py-filelock's reply: " + line);
    latency.push_back(static_cast<double>(acquired - released));
    // Take it again (py-filelock released it) for the next round.
    for (;;) {
      held = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (held >= 0) break;
      if (errno != EEXIST) DieErrno("hold again");
      usleep(1000);
    }
    close(held);
    WriteByte(command.write_end, 'n');
  }
  close(command.write_end);
  WaitChild(python, "py-filelock waiter");
  close(reply.read_end);
  unlink(path.c_str());
  rows.push_back(Row{"py-filelock SoftFileLock hand-off p50 (ms)",
                     absl::StrFormat("%.1f", Percentile(latency, 50) / 1e6),
                     "-", "-", "-", "-"});
  rows.push_back(Row{"py-filelock SoftFileLock hand-off max (ms)",
                     absl::StrFormat("%.1f", Percentile(latency, 100) / 1e6),
                     "-", "-", "-", "-"});
}

}  // namespace
}  // namespace onlyone::bench

int main(int argc, char** argv) {
  using namespace onlyone::bench;  // NOLINT
  bool fail_on_miss = false;
  int handoffs = 300;
  const IntFlag flags[] = {{"--handoffs=", &handoffs}};
  ParseCommandLine(argc, argv, fail_on_miss, flags);
  signal(SIGPIPE, SIG_IGN);
  absl::PrintF("soft_lock_bench: %s\n", MachineSummary());
  absl::PrintF("  load average at start: %s", LoadAverage());
  const int64_t start = NowNs();
  TempDir dir("onlyone_soft_lock_bench");
  std::vector<Row> rows;
  BenchUncontended(dir, rows);
  BenchHandoff(dir, handoffs, rows);
  BenchPyFilelock(dir, rows);
  absl::PrintF("\n");
  PrintTable("metric", rows);
  absl::PrintF("\ntook %.1f s; load average at end: %s",
               (NowNs() - start) / 1e9, LoadAverage());
  return 0;
}
