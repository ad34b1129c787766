// A redis-server of the test's own, for tests of the Redis lock and of the
// command's --redis mode: started on a unix socket in a fresh directory and
// on a free loopback TCP port, with no persistence (--save '' --appendonly
// no), and killed (SIGKILL) when the object goes away. It also dies with
// the thread that started it (PR_SET_PDEATHSIG), so a crashed test binary
// leaves no server behind.
//
// Example:
//   absl::StatusOr<std::unique_ptr<RedisServer>> server = RedisServer::Start();
//   ASSERT_TRUE(server.ok()) << server.status();
//   options.server = (*server)->unix_url();   // or tcp_url()
//   (*server)->Restart();                     // its data is gone
//
// Readiness is the server's own notification (--supervised systemd, to a
// datagram socket named by NOTIFY_SOCKET): no polling, no sleep.
//
// Thread safety: one thread (the one that started it) uses an object.

#ifndef ONLYONE_TESTS_REDIS_SERVER_H_
#define ONLYONE_TESTS_REDIS_SERVER_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace onlyone::testing {

class RedisServer {
 public:
  struct Options {
    // Required of clients (--requirepass) when not empty.
    std::string password;
  };

  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RedisServer>> Start(
      const Options& options);
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RedisServer>> Start() {
    return Start(Options());
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;
  ~RedisServer();

  std::string unix_url() const { return "unix://" + socket_path_; }
  std::string tcp_url() const;
  const std::string& socket_path() const { return socket_path_; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

  // Kills the server (SIGKILL) and reaps it: connections break, the
  // socket refuses new ones.
  void Kill();
  // Kill(), then a new server on the same socket and port, with no data.
  [[nodiscard]] absl::Status Restart();
  void Pause();   // SIGSTOP
  void Resume();  // SIGCONT

  // Runs one command (for checks: INFO, CLIENT KILL, PUBSUB); returns the
  // reply as text (arrays joined by newlines).
  [[nodiscard]] absl::StatusOr<std::string> Command(
      const std::vector<std::string>& argv) const;
  // How many times the server ran `command` (INFO commandstats), e.g.
  // "evalsha"; 0 if never.
  [[nodiscard]] absl::StatusOr<int64_t> CallsOf(const std::string& command) const;

 private:
  RedisServer(std::string dir, bool dir_is_ours, int port, Options options);
  absl::Status Launch();

  const std::string dir_;
  const bool remove_dir_;
  const std::string socket_path_;
  const int port_;
  const Options options_;
  pid_t pid_ = -1;
};

}  // namespace onlyone::testing

#endif  // ONLYONE_TESTS_REDIS_SERVER_H_
