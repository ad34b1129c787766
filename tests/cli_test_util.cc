#include "tests/cli_test_util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace onlyone::testing {
namespace {

std::string NextOutputPath(absl::string_view what) {
  static std::atomic<int> counter{0};
  const char* base = getenv("TEST_TMPDIR");
  return absl::StrCat(base ? base : "/tmp", "/cli_", getpid(), "_",
                      counter.fetch_add(1), ".", what);
}

// In the forked child: puts each test descriptor at its child number, in
// two steps so that one mapping never clobbers the source of another.
void MapDescriptors(const std::vector<PassFd>& fds) {
  std::vector<int> staged;
  for (const PassFd& fd : fds) {
    staged.push_back(fcntl(fd.test_fd, F_DUPFD_CLOEXEC, 100));
  }
  for (size_t i = 0; i < fds.size(); ++i) {
    if (staged[i] < 0 || dup2(staged[i], fds[i].child_fd) < 0) {
      perror("dup2");
      _exit(120);
    }
  }
}

}  // namespace

std::string OnlyonePath() {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* workspace = getenv("TEST_WORKSPACE");
  return absl::StrCat(srcdir ? srcdir : ".", "/",
                      workspace ? workspace : "onlyone", "/onlyone");
}

std::string TestBinaryPath() {
  char self[4096];
  const ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
  return length > 0 ? std::string(self, length) : "";
}

std::unique_ptr<Process> Process::Start(const std::vector<std::string>& argv,
                                        const std::vector<PassFd>& fds,
                                        const std::vector<std::string>& env) {
  std::string out_path = NextOutputPath("out");
  std::string err_path = NextOutputPath("err");
  Child child = Child::Fork([&]() -> int {
    MapDescriptors(fds);
    const int in = open("/dev/null", O_RDONLY);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
        dup2(err, 2) < 0) {
      perror("redirect");
      return 121;
    }
    for (const std::string& entry : env) putenv(strdup(entry.c_str()));
    // The test runner's files are not the child's to touch.
    for (const char* name :
         {"TEST_PREMATURE_EXIT_FILE", "XML_OUTPUT_FILE",
          "TEST_SHARD_STATUS_FILE", "TEST_UNDECLARED_OUTPUTS_DIR"}) {
      unsetenv(name);
    }
    std::vector<char*> args;
    for (const std::string& arg : argv) {
      args.push_back(const_cast<char*>(arg.c_str()));
    }
    args.push_back(nullptr);
    execv(args[0], args.data());
    perror(args[0]);
    return 122;
  });
  return std::unique_ptr<Process>(
      new Process(std::move(child), std::move(out_path), std::move(err_path)));
}

std::unique_ptr<Process> Process::StartOnlyone(
    const std::vector<std::string>& args, const std::vector<PassFd>& fds,
    const std::vector<std::string>& env) {
  std::vector<std::string> argv = {OnlyonePath()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Start(argv, fds, env);
}

std::string Process::out() const { return ReadFileOrEmpty(out_path_); }
std::string Process::err() const { return ReadFileOrEmpty(err_path_); }

Result RunOnlyone(const std::vector<std::string>& args,
                  const std::vector<PassFd>& fds,
                  const std::vector<std::string>& env) {
  std::unique_ptr<Process> process = Process::StartOnlyone(args, fds, env);
  Result result;
  result.code = process->Wait();
  result.out = process->out();
  result.err = process->err();
  return result;
}

bool LockedElsewhere(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool refused = flock(fd, LOCK_EX | LOCK_NB) != 0;
  close(fd);  // releases it if we got it
  return refused;
}

}  // namespace onlyone::testing
