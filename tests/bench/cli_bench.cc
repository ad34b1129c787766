// cli_bench: the start-up cost of the onlyone command next to flock(1), in
// one run: `onlyone run --lock F -- true` (COMMAND exec'd in onlyone's
// place) against `flock -n F true`, and, for information, the supervised
// mode `onlyone run --lock F --max-runtime 1h -- true` (onlyone forks
// COMMAND and waits, as flock(1) does). Target: onlyone in place takes at
// most 1.0x flock's wall time, as the median of the per-pair ratios
// (docs/performance.md, docs/cli.md).
//
//   bazel run -c opt //tests/bench:cli_bench [-- --runs=N ...]
//
// Flags (all optional):
//   --runs=N       timed rounds, at least 100                     (1000)
//   --warmup=N     untimed rounds first                           (100)
//   --onlyone=PATH the binary (default: //:onlyone from the runfiles)
//   --flock=PATH   flock(1)                                       (/usr/bin/flock)
//   --fail_on_miss exit 1 when the target is missed (default: report only)
//
// Method: a round runs each of the three commands once, started the same
// way (posix_spawn, output to /dev/null, then waitpid), in an order that
// goes through all six orders in turn, so that load from elsewhere on the
// machine hits all alike and none is always first. Each run's wall time is
// read with CLOCK_MONOTONIC around spawn and wait. A round gives a pair for
// each onlyone mode, (onlyone, flock) of the same round, and the figure
// that decides is the median over rounds of onlyone / flock: neighbours in
// time share the machine's state, which the ratio of two overall medians
// does not see. The medians, means, 10th and 90th percentiles and minima
// are printed too, and the load average before and after. Every run must
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

ABSL_FLAG(int, runs, 1000, "Timed rounds (each command once), at least 100.");
ABSL_FLAG(int, warmup, 100, "Untimed rounds first.");
ABSL_FLAG(std::string, onlyone, "",
          "The onlyone binary (default: from the runfiles).");
ABSL_FLAG(std::string, flock, "/usr/bin/flock", "flock(1).");
ABSL_FLAG(bool, fail_on_miss, false, "Exit 1 when the target is missed.");

extern char** environ;

namespace onlyone::bench {
namespace {

constexpr double kTarget = 1.0;
constexpr int kMinimumRounds = 100;

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
  const int runs = absl::GetFlag(FLAGS_runs);
  if (runs < kMinimumRounds) {
    Die(absl::StrFormat("--runs=%d: at least %d rounds", runs, kMinimumRounds));
  }
  TempDir dir("cli_bench");
  const std::string lock = dir.File("bench.lock");
  const std::vector<std::vector<std::string>> commands = {
      {onlyone, "run", "--lock", lock, "--", "true"},
      {onlyone, "run", "--lock", lock, "--max-runtime", "1h", "--", "true"},
      {absl::GetFlag(FLAGS_flock), "-n", lock, "true"},
  };
  const char* const names[] = {"onlyone run --lock F -- true",
                               "  ... --max-runtime 1h (supervised)",
                               "flock -n F true"};
  enum { kInPlace = 0, kSupervised = 1, kFlock = 2 };
  // The six orders of the three commands, taken in turn.
  const int orders[6][3] = {{0, 1, 2}, {1, 2, 0}, {2, 0, 1},
                            {0, 2, 1}, {2, 1, 0}, {1, 0, 2}};

  printf("%s\nload average before: %s", MachineSummary().c_str(),
         LoadAverage().c_str());
  for (int i = 0; i < absl::GetFlag(FLAGS_warmup); ++i) {
    for (const std::vector<std::string>& command : commands) {
      if (TimeOnce(command) < 0) Die("a warm-up run failed");
    }
  }
  std::vector<double> times[3];
  std::vector<double> in_place_ratios, supervised_ratios;
  for (int i = 0; i < runs; ++i) {
    double round[3];
    for (int which : orders[i % 6]) {
      round[which] = TimeOnce(commands[which]);
      if (round[which] < 0) {
        Die(absl::StrFormat("round %d: %s failed", i, names[which]));
      }
    }
    for (int which = 0; which < 3; ++which) {
      times[which].push_back(round[which]);
    }
    in_place_ratios.push_back(round[kInPlace] / round[kFlock]);
    supervised_ratios.push_back(round[kSupervised] / round[kFlock]);
  }

  printf("%d rounds, each command once per round in rotating order; wall "
         "time per run in microseconds\n",
         runs);
  printf("%-40s %8s %8s %8s %8s %8s\n", "", "median", "mean", "p10", "p90",
         "min");
  Summary summaries[3];
  for (int which = 0; which < 3; ++which) {
    summaries[which] = Summarize(times[which]);
    const Summary& s = summaries[which];
    printf("%-40s %8.0f %8.0f %8.0f %8.0f %8.0f\n", names[which], s.median,
           s.mean, s.p10, s.p90, s.min);
  }
  const double in_place = Median(in_place_ratios);
  const double supervised = Median(supervised_ratios);
  const bool pass = in_place <= kTarget;
  printf("onlyone in place / flock: median of per-round ratios %.3f, ratio "
         "of medians %.3f, of means %.3f (target <= %.1f): %s\n",
         in_place, summaries[kInPlace].median / summaries[kFlock].median,
         summaries[kInPlace].mean / summaries[kFlock].mean, kTarget,
         Verdict(pass).c_str());
  printf("onlyone supervised / flock: median of per-round ratios %.3f, ratio "
         "of medians %.3f, of means %.3f (for information)\n",
         supervised, summaries[kSupervised].median / summaries[kFlock].median,
         summaries[kSupervised].mean / summaries[kFlock].mean);
  printf("load average after: %s", LoadAverage().c_str());
  return !pass && absl::GetFlag(FLAGS_fail_on_miss) ? 1 : 0;
}
