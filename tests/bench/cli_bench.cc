// cli_bench: the start-up cost of the onlyone command next to flock(1), in
// one run: `onlyone run --lock F -- true` against `flock -n F true`. Target:
// onlyone takes at most 1.2x flock's wall time (docs/performance.md,
// docs/cli.md).
//
//   bazel run -c opt //tests/bench:cli_bench [-- --runs=N ...]
//
// Flags (all optional):
//   --runs=N       timed runs of each command                     (2000)
//   --warmup=N     untimed runs of each first                     (100)
//   --onlyone=PATH the binary (default: //:onlyone from the runfiles)
//   --flock=PATH   flock(1)                                       (/usr/bin/flock)
//   --fail_on_miss exit 1 when the target is missed (default: report only)
//
// Method: both commands are started the same way (posix_spawn, output to
// /dev/null, then waitpid), alternately, and which of the two goes first
// alternates too, so that load from elsewhere on the machine hits both
// alike. Each run's wall time is read with CLOCK_MONOTONIC around spawn and
// wait; the figures are the median, mean, 10th and 90th percentiles and the
// minimum, and the ratios of the medians and of the means. Every run must
// exit 0 (the lock is free each time); otherwise the benchmark fails.

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tests/bench/bench_util.h"

ABSL_FLAG(int, runs, 2000, "Timed runs of each command.");
ABSL_FLAG(int, warmup, 100, "Untimed runs of each command first.");
ABSL_FLAG(std::string, onlyone, "",
          "The onlyone binary (default: from the runfiles).");
ABSL_FLAG(std::string, flock, "/usr/bin/flock", "flock(1).");
ABSL_FLAG(bool, fail_on_miss, false, "Exit 1 when the target is missed.");

extern char** environ;

namespace onlyone::bench {
namespace {

constexpr double kTarget = 1.2;

std::string FindOnlyone(const char* argv0) {
  std::vector<std::string> candidates;
  if (const char* dir = getenv("RUNFILES_DIR")) {
    candidates.push_back(absl::StrCat(dir, "/onlyone/onlyone"));
  }
  candidates.push_back(absl::StrCat(argv0, ".runfiles/onlyone/onlyone"));
  candidates.push_back("onlyone");  // `bazel run` starts in the runfiles
  for (const std::string& path : candidates) {
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// Runs argv once; returns its wall time in microseconds, or -1 if it did not
// exit 0.
double TimeOnce(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  const int64_t start = NowNs();
  pid_t pid;
  const int error =
      posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (error != 0) return -1;
  int status;
  while (waitpid(pid, &status, 0) < 0) {
  }
  const double elapsed = (NowNs() - start) / 1e3;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? elapsed : -1;
}

struct Summary {
  double median, mean, p10, p90, min;
};

Summary Summarize(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  const size_t n = times.size();
  return {times[n / 2],
          std::accumulate(times.begin(), times.end(), 0.0) / n,
          times[n / 10], times[n * 9 / 10], times[0]};
}

}  // namespace
}  // namespace onlyone::bench

int main(int argc, char** argv) {
  using namespace onlyone::bench;  // NOLINT
  absl::ParseCommandLine(argc, argv);
  std::string onlyone = absl::GetFlag(FLAGS_onlyone);
  if (onlyone.empty()) onlyone = FindOnlyone(argv[0]);
  if (onlyone.empty()) Die("onlyone not found; pass --onlyone=PATH");
  TempDir dir("cli_bench");
  const std::string lock = dir.File("bench.lock");
  const std::vector<std::string> onlyone_run = {onlyone, "run", "--lock",
                                                lock,    "--",  "true"};
  const std::vector<std::string> flock_run = {absl::GetFlag(FLAGS_flock), "-n",
                                              lock, "true"};

  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) {
    if (TimeOnce(onlyone_run) < 0 || TimeOnce(flock_run) < 0) {
      Die("a warm-up run failed");
    }
  }
  const int runs = absl::GetFlag(FLAGS_runs);
  std::vector<double> onlyone_times, flock_times;
  for (int i = 0; i < runs; ++i) {
    double a, b;
    if (i % 2 == 0) {
      a = TimeOnce(onlyone_run);
      b = TimeOnce(flock_run);
    } else {
      b = TimeOnce(flock_run);
      a = TimeOnce(onlyone_run);
    }
    if (a < 0 || b < 0) {
      Die(absl::StrFormat("run %d failed (onlyone %s, flock %s)", i,
                          a < 0 ? "failed" : "ok", b < 0 ? "failed" : "ok"));
    }
    onlyone_times.push_back(a);
    flock_times.push_back(b);
  }

  const Summary o = Summarize(onlyone_times);
  const Summary f = Summarize(flock_times);
  printf("%d runs each, interleaved; wall time per run in microseconds\n",
         runs);
  printf("%-40s %8s %8s %8s %8s %8s\n", "", "median", "mean", "p10", "p90",
         "min");
  printf("%-40s %8.0f %8.0f %8.0f %8.0f %8.0f\n",
         "onlyone run --lock F -- true", o.median, o.mean, o.p10, o.p90, o.min);
  printf("%-40s %8.0f %8.0f %8.0f %8.0f %8.0f\n", "flock -n F true", f.median,
         f.mean, f.p10, f.p90, f.min);
  const double median_ratio = o.median / f.median;
  const double mean_ratio = o.mean / f.mean;
  const bool pass = median_ratio <= kTarget && mean_ratio <= kTarget;
  printf("ratio onlyone/flock: median %.2f, mean %.2f (target <= %.1f): %s\n",
         median_ratio, mean_ratio, kTarget, Verdict(pass).c_str());
  return !pass && absl::GetFlag(FLAGS_fail_on_miss) ? 1 : 0;
}
