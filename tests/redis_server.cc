#include "tests/redis_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "onlyone/internal/redis_connection.h"
#include "onlyone/internal/redis_endpoint.h"
#include "tests/test_util.h"

extern char** environ;


namespace onlyone::testing {
namespace {

constexpr absl::Duration kStartTimeout = absl::Seconds(20);

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", strerror(errno)));
}

// A loopback TCP port nobody listens on now.
absl::StatusOr<int> FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket");
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) {
    absl::Status status = Errno("bind");
    close(fd);
    return status;
  }
  close(fd);
  return ntohs(address.sin_port);
}

// A directory short enough for a unix socket path (108 bytes): under
// TEST_TMPDIR when that is short, else in the process's test root
// (test_util.h), which is removed also when a sanitizer report ends the
// test, so that no /tmp/redis-test.* is left behind then.
std::pair<std::string, bool> ShortDirectory() {
  const char* base = getenv("TEST_TMPDIR");
  if (base != nullptr && strlen(base) < 70) return {MakeTempDir(), true};
  const char* root = getenv("ONLYONE_TEST_ROOT");
  std::string pattern =
      absl::StrCat(root != nullptr && strlen(root) < 70 ? root : "/tmp",
                   "/redis-test.XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    perror("mkdtemp");
    abort();
  }
  return {pattern, true};
}

}  // namespace

RedisServer::RedisServer(std::string dir, bool dir_is_ours, int port,
                         Options options)
    : dir_(std::move(dir)),
      remove_dir_(dir_is_ours),
      socket_path_(dir_ + "/redis.sock"),
      port_(port),
      options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(
    const Options& options) {
  absl::StatusOr<int> port = FreePort();
  if (!port.ok()) return port.status();
  auto [dir, ours] = ShortDirectory();
  std::unique_ptr<RedisServer> server(
      new RedisServer(dir, ours, *port, options));
  if (absl::Status status = server->Launch(); !status.ok()) return status;
  return server;
}

absl::Status RedisServer::Launch() {
  const std::string notify_path = dir_ + "/notify";
  unlink(notify_path.c_str());
  const int notify = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (notify < 0) return Errno("socket(AF_UNIX)");
  struct sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  strncpy(address.sun_path, notify_path.c_str(), sizeof address.sun_path - 1);
  if (bind(notify, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    absl::Status status = Errno(notify_path + ": bind");
    close(notify);
    return status;
  }
  std::vector<std::string> args = {
      "redis-server", "--port", absl::StrCat(port_), "--bind", "127.0.0.1",
      "--unixsocket", socket_path_, "--unixsocketperm", "700", "--save", "",
      "--appendonly", "no", "--dir", dir_, "--logfile", dir_ + "/redis.log",
      "--daemonize", "no", "--supervised", "systemd"};
  if (!options_.password.empty()) {
    args.push_back("--requirepass");
    args.push_back(options_.password);
  }
  // Everything the child needs is built before fork(): after it, only
  // async-signal-safe calls.
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::string notify_env = "NOTIFY_SOCKET=" + notify_path;
  std::vector<char*> envp;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (!absl::StartsWith(*entry, "NOTIFY_SOCKET=")) envp.push_back(*entry);
  }
  envp.push_back(notify_env.data());
  envp.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(notify);
    return Errno("fork");
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    execvpe("redis-server", argv.data(), envp.data());
    _exit(127);
  }
  pid_ = pid;
  const absl::Time deadline = absl::Now() + kStartTimeout;
  for (;;) {
    struct pollfd ready = {notify, POLLIN, 0};
    const int left_ms =
        static_cast<int>(absl::ToInt64Milliseconds(deadline - absl::Now()));
    if (left_ms <= 0 || poll(&ready, 1, left_ms) == 0) {
      close(notify);
      Kill();
      return absl::DeadlineExceededError(absl::StrCat(
          "redis-server did not report ready; its log: ",
          ReadFileOrEmpty(dir_ + "/redis.log")));
    }
    char message[512];
    const ssize_t got = recv(notify, message, sizeof message - 1, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      absl::Status status = Errno("recv(NOTIFY_SOCKET)");
      close(notify);
      Kill();
      return status;
    }
    if (absl::StrContains(absl::string_view(message, got), "READY=1")) break;
  }
  close(notify);
  return absl::OkStatus();
}

RedisServer::~RedisServer() {
  Kill();
  if (remove_dir_) RemoveTree(dir_);
}

std::string RedisServer::tcp_url() const {
  return absl::StrCat("redis://127.0.0.1:", port_);
}

void RedisServer::Kill() {
  if (pid_ <= 0) return;
  if (kill(pid_, SIGKILL) == 0) {
    while (waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  Kill();
  return Launch();
}

void RedisServer::Pause() { kill(pid_, SIGSTOP); }
void RedisServer::Resume() { kill(pid_, SIGCONT); }

absl::StatusOr<std::string> RedisServer::Command(
    const std::vector<std::string>& argv) const {
  internal::RedisEndpoint endpoint;
  endpoint.transport = internal::RedisEndpoint::Transport::kUnix;
  endpoint.socket_path = socket_path_;
  endpoint.password = options_.password;
  absl::StatusOr<std::unique_ptr<internal::RedisConnection>> connection =
      internal::RedisConnection::Connect(endpoint, absl::Seconds(5));
  if (!connection.ok()) return connection.status();
  absl::StatusOr<internal::RedisReply> reply = (*connection)->Command(argv);
  if (!reply.ok()) return reply.status();
  if (reply->type == internal::RedisReply::Type::kError) {
    return absl::FailedPreconditionError(reply->text);
  }
  if (reply->type == internal::RedisReply::Type::kInteger) {
    return absl::StrCat(reply->integer);
  }
  if (reply->type == internal::RedisReply::Type::kArray) {
    std::vector<std::string> parts;
    for (const internal::RedisReply& element : reply->elements) {
      parts.push_back(element.type == internal::RedisReply::Type::kInteger
                          ? absl::StrCat(element.integer)
                          : element.text);
    }
    return absl::StrJoin(parts, "\n");
  }
  return reply->text;
}

absl::StatusOr<int64_t> RedisServer::CallsOf(const std::string& command) const {
  absl::StatusOr<std::string> info = Command({"INFO", "commandstats"});
  if (!info.ok()) return info.status();
  const std::string prefix = absl::StrCat("cmdstat_", command, ":calls=");
  for (absl::string_view line : absl::StrSplit(*info, '\n')) {
    if (!absl::ConsumePrefix(&line, prefix)) continue;
    int64_t calls = 0;
    if (absl::SimpleAtoi(line.substr(0, line.find(',')), &calls)) return calls;
  }
  return 0;
}

}  // namespace onlyone::testing
