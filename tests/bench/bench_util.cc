#include "tests/bench/bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace onlyone::bench {

void Die(absl::string_view what) {
  // program_invocation_short_name is the benchmark's own name (glibc).
  absl::FPrintF(stderr, "%s: %s\n", program_invocation_short_name, what);
  fflush(nullptr);
  TempDir::RemoveCurrent();
  // _exit, not exit: Die also ends forked children, which must not run the
  // parent's exit handlers.
  _exit(2);
}

void DieErrno(absl::string_view what) {
  Die(absl::StrCat(what, ": ", strerror(errno)));
}

namespace {

// Sets the variable of the flag `arg` names, if it is one of `flags`.
bool SetIntFlag(absl::string_view arg, absl::Span<const IntFlag> flags) {
  for (const IntFlag& flag : flags) {
    absl::string_view value = arg;
    if (!absl::ConsumePrefix(&value, flag.prefix)) continue;
    if (!absl::SimpleAtoi(value, flag.value) || *flag.value <= 0) {
      Die(absl::StrCat("bad value in ", arg));
    }
    return true;
  }
  return false;
}

}  // namespace

void ParseCommandLine(int argc, char** argv, bool& fail_on_miss,
                      absl::Span<const IntFlag> flags,
                      const std::function<bool(absl::string_view)>& own_flag) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--fail_on_miss") {
      fail_on_miss = true;
    } else if (!SetIntFlag(arg, flags) && !(own_flag && own_flag(arg))) {
      Die(absl::StrCat("unknown flag ", arg, " (see the source)"));
    }
  }
}

int64_t NowNs(clockid_t clock) {
  struct timespec now;
  clock_gettime(clock, &now);
  return int64_t{now.tv_sec} * 1000000000 + now.tv_nsec;
}

int64_t MinorFaults(int who) {
  struct rusage usage {};
  getrusage(who, &usage);
  return usage.ru_minflt;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * values.size()));
  rank = std::clamp<size_t>(rank, 1, values.size());
  return values[rank - 1];
}

std::string Ratio(double ours, double raw) {
  if (raw <= 0) return "n/a";
  return absl::StrFormat("%.2f", ours / raw);
}

std::string Verdict(bool pass) { return pass ? "PASS" : "MISS"; }

Row RatioRow(std::string metric, std::string ours_text, std::string raw_text,
             double ours, double raw, double target_ratio) {
  const bool has_target = target_ratio > 0;
  return {std::move(metric),
          std::move(ours_text),
          std::move(raw_text),
          Ratio(ours, raw),
          has_target ? absl::StrFormat("ratio <= %.2f", target_ratio) : "-",
          has_target ? Verdict(ours <= target_ratio * raw) : "-"};
}

AlternateSamples SampleAlternately(
    int warmups, int rounds,
    const std::function<double(char variant)>& measure) {
  for (int i = 0; i < warmups; ++i) {
    measure('s');
    measure('r');
  }
  AlternateSamples samples;
  for (int i = 0; i < rounds; ++i) {
    samples.ours.push_back(measure('s'));
    samples.raw.push_back(measure('r'));
  }
  return samples;
}

void AddLatencyRows(std::vector<Row>& rows, const std::string& p50_metric,
                    const std::string& p99_metric,
                    const std::vector<double>& ours_ns,
                    const std::vector<double>& raw_ns, double target_ratio) {
  auto us = [](double ns) { return absl::StrFormat("%.1f", ns / 1000.0); };
  const double ours50 = Percentile(ours_ns, 50), raw50 = Percentile(raw_ns, 50);
  const double ours99 = Percentile(ours_ns, 99), raw99 = Percentile(raw_ns, 99);
  rows.push_back(
      RatioRow(p50_metric, us(ours50), us(raw50), ours50, raw50, target_ratio));
  rows.push_back(RatioRow(p99_metric, us(ours99), us(raw99), ours99, raw99, 0));
}

void PrintTable(absl::string_view metric_header, const std::vector<Row>& rows) {
  auto cells_of = [](const Row& r) {
    return std::vector<std::string>{r.metric, r.onlyone, r.raw,
                                    r.ratio,  r.target,  r.verdict};
  };
  const std::vector<std::string> header =
      cells_of({std::string(metric_header), "onlyone", "raw", "ratio", "target",
                "result"});
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
  for (const Row& r : rows) {
    const std::vector<std::string> cells = cells_of(r);
    for (size_t i = 0; i < cells.size(); ++i) {
      width[i] = std::max(width[i], cells[i].size());
    }
  }
  auto print_row = [&](const std::vector<std::string>& cells) {
    std::string line = "|";
    for (size_t i = 0; i < cells.size(); ++i) {
      // The metric column is left-aligned, the figures right-aligned.
      const std::string pad(width[i] - cells[i].size(), ' ');
      absl::StrAppend(&line, " ", i == 0 ? cells[i] + pad : pad + cells[i],
                      " |");
    }
    absl::PrintF("%s\n", line);
  };
  print_row(header);
  std::string rule = "|";
  for (size_t w : width) absl::StrAppend(&rule, std::string(w + 2, '-'), "|");
  absl::PrintF("%s\n", rule);
  for (const Row& r : rows) print_row(cells_of(r));
}

int CountMisses(const std::vector<Row>& rows) {
  return static_cast<int>(
      std::count_if(rows.begin(), rows.end(),
                    [](const Row& r) { return r.verdict == "MISS"; }));
}

std::string ReadWholeFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string text;
  char buffer[8192];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n > 0) {
      text.append(buffer, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  close(fd);
  return text;
}

namespace {

std::string CpuModel() {
  for (absl::string_view line :
       absl::StrSplit(ReadWholeFile("/proc/cpuinfo"), '\n')) {
    if (absl::ConsumePrefix(&line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != absl::string_view::npos) {
        return std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
    }
  }
  return "unknown";
}

}  // namespace

std::string MachineSummary() {
  struct utsname uts {};
  uname(&uts);
  return absl::StrFormat("%d CPUs (%s), kernel %s",
                         sysconf(_SC_NPROCESSORS_ONLN), CpuModel(),
                         uts.release);
}

std::string LoadAverage() { return ReadWholeFile("/proc/loadavg"); }

TempDir::TempDir(absl::string_view name, absl::string_view parent) {
  std::string base(parent);
  if (base.empty()) {
    const char* tmpdir = getenv("TMPDIR");
    base = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
  }
  std::string templ = absl::StrCat(base, "/", name, ".XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) DieErrno("mkdtemp");
  path_ = templ;
  owner_ = getpid();
  current_ = this;
}

TempDir::~TempDir() {
  Remove();
  if (current_ == this) current_ = nullptr;
}

std::string TempDir::File(absl::string_view name) const {
  return absl::StrCat(path_, "/", name);
}

void TempDir::RemoveCurrent() {
  if (current_ != nullptr) current_->Remove();
}

void TempDir::Remove() {
  if (getpid() != owner_ || removed_) return;  // a fork()ed child's copy
  removed_ = true;
  // Depth first, without following links: files, sockets and the
  // subdirectories the library made, then the directory itself.
  nftw(
      path_.c_str(),
      [](const char* path, const struct stat*, int, struct FTW*) {
        remove(path);
        return 0;
      },
      16, FTW_DEPTH | FTW_PHYS);
}

Pipe MakePipe() {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) DieErrno("pipe2");
  return Pipe{fds[0], fds[1]};
}

void WriteByte(int fd, char c) {
  for (;;) {
    const ssize_t n = write(fd, &c, 1);
    if (n == 1) return;
    if (n < 0 && errno == EINTR) continue;
    DieErrno("pipe write");
  }
}

char ReadByte(int fd) {
  for (;;) {
    char c;
    const ssize_t n = read(fd, &c, 1);
    if (n == 1) return c;
    if (n == 0) return 0;
    if (errno == EINTR) continue;
    DieErrno("pipe read");
  }
}

void ExpectByte(int fd, char expected, absl::string_view context) {
  const char got = ReadByte(fd);
  if (got != expected) {
    Die(absl::StrFormat("%s: expected '%c' from the peer, got %d", context,
                        expected, got));
  }
}

pid_t ForkChild(const std::function<int()>& body) {
  fflush(stdout);
  fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) DieErrno("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    _exit(body());
  }
  return pid;
}

void WaitChild(pid_t pid, absl::string_view what, struct rusage* usage) {
  int status = 0;
  while (wait4(pid, &status, 0, usage) < 0) {
    if (errno != EINTR) DieErrno("wait4");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Die(absl::StrFormat("%s (pid %d) failed: status 0x%x", what, pid, status));
  }
}

}  // namespace onlyone::bench
