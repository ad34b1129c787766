// RedisLock against a real redis-server that each test starts for itself
// (tests/redis_server.h), with real processes for every fault the lock must
// survive: a holder killed or stopped past its lease, the server restarted,
// killed or hung, a waiter's connection dropped; plus exclusion, token
// order, the no-polling wait, URLs, unreachable servers and passwords.

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/exclusive.h"
#include "onlyone/lock_holder.h"
#include "onlyone/internal/cancellation_state.h"
#include "onlyone/internal/redis_endpoint.h"
#include "onlyone/internal/sha1.h"
#include "onlyone/redis_backend.h"
#include "onlyone/redis_lock.h"
#include "tests/redis_server.h"
#include "tests/test_util.h"

namespace onlyone::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// How long a woken waiter or a reported loss may take: generous for a
// loaded machine, far below "never".
constexpr absl::Duration kPrompt = absl::Seconds(2);

// Waits until `lost` is cancelled, at most `timeout`; whether it was.
bool WaitLost(const CancellationToken& lost, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<internal::CancellationEventFd>> fd =
      internal::CancellationEventFd::Create(lost.state());
  if (absl::IsCancelled(fd.status())) return true;  // already lost
  if (!fd.ok()) return false;
  struct pollfd ready = {(*fd)->fd(), POLLIN, 0};
  return poll(&ready, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout))) ==
         1;
}

// The CPU time (user + system) process `pid` has used.
absl::Duration CpuTimeOf(pid_t pid) {
  const std::string stat = ReadFileOrEmpty(absl::StrCat("/proc/", pid, "/stat"));
  const size_t end_of_name = stat.rfind(')');
  if (end_of_name == std::string::npos) return absl::InfiniteDuration();
  std::vector<std::string> fields =
      absl::StrSplit(stat.substr(end_of_name + 2), ' ');
  int64_t user = 0, system = 0;
  // Fields 14 and 15 of proc(5); field 3 (the state) is fields[0].
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &user) ||
      !absl::SimpleAtoi(fields[12], &system)) {
    return absl::InfiniteDuration();
  }
  return absl::Seconds(static_cast<double>(user + system) /
                       sysconf(_SC_CLK_TCK));
}

class RedisLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start();
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = *std::move(started);
  }

  RedisLockOptions Options(absl::Duration lease = absl::Seconds(30)) const {
    RedisLockOptions options;
    options.server = server_->unix_url();
    options.lease = lease;
    return options;
  }

  // Waits until `subscribers` clients are subscribed to `name`'s release
  // channel: how a test knows a waiter is really blocked (the server's own
  // count, as WaitForBlockedWaiters reads the kernel's).
  bool WaitForSubscribers(const std::string& name, int subscribers) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      absl::StatusOr<std::string> reply = server_->Command(
          {"PUBSUB", "NUMSUB", absl::StrCat("onlyone:released:", name)});
      if (reply.ok() &&
          absl::EndsWith(*reply, absl::StrCat("\n", subscribers))) {
        return true;
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
    return false;
  }

  // A child that holds `name` from when it sends its token on `ready` until
  // the test sends on `release`.
  Child HoldInChild(const std::string& name, const RedisLockOptions& options,
                    Pipe& ready, Pipe& release) {
    return Child::Fork([&, options] {
      absl::StatusOr<RedisLock> lock = RedisLock::Acquire(name, options);
      if (!lock.ok()) return 2;
      const uint64_t token = lock->fencing_token();
      if (write(ready.write_fd(), &token, sizeof token) != sizeof token) {
        return 3;
      }
      release.Receive(absl::Hours(1));
      return lock->Release().ok() ? 0 : 4;
    });
  }

  static uint64_t ReadToken(Pipe& pipe) {
    uint64_t token = 0;
    struct pollfd ready = {pipe.read_fd(), POLLIN, 0};
    if (poll(&ready, 1, 10000) != 1 ||
        read(pipe.read_fd(), &token, sizeof token) != sizeof token) {
      return 0;
    }
    return token;
  }

  std::unique_ptr<RedisServer> server_;
};

TEST_F(RedisLockTest, BadUrlsAreInvalidArgumentAndMaskThePassword) {
  for (const char* url :
       {"", "http://127.0.0.1:6379", "redis://", "redis://:6379",
        "redis://host:0", "redis://host:65536", "redis://host:port",
        "redis://host:", "redis://host/db", "redis://[::1",
        "unix://relative/redis.sock", "unix:///x.sock?db=x",
        "rediss://host:6379", "redis://user:s3cret-Pw@/0"}) {
    RedisLockOptions options;
    options.server = url;
    absl::StatusOr<RedisLock> lock = RedisLock::Acquire("job", options);
    EXPECT_TRUE(absl::IsInvalidArgument(lock.status()))
        << url << ": " << lock.status();
    EXPECT_THAT(std::string(lock.status().message()), Not(HasSubstr("s3cret")));
  }
}

TEST_F(RedisLockTest, BadNamesAndLeasesAreInvalidArgument) {
  RedisLockOptions options = Options();
  EXPECT_TRUE(absl::IsInvalidArgument(RedisLock::Acquire("", options).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      RedisLock::Acquire("a\nb", options).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      RedisLock::Acquire(std::string(1001, 'x'), options).status()));
  options.lease = absl::Milliseconds(10);
  EXPECT_TRUE(
      absl::IsInvalidArgument(RedisLock::Acquire("job", options).status()));
}

TEST_F(RedisLockTest, AnUnreachableServerIsUnavailableNamingItNeverAHang) {
  RedisLockOptions options = Options();
  options.io_timeout = absl::Milliseconds(300);

  // No socket.
  options.server = absl::StrCat("unix://", server_->socket_path(), ".none");
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("job", options);
  EXPECT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr(server_->socket_path() + ".none"));
  EXPECT_FALSE(HolderFromStatus(lock.status()).has_value())
      << "an unreachable server is not a held lock";

  // A port nobody listens on (the server's, once it is gone).
  const std::string tcp = server_->tcp_url();
  server_->Kill();
  options.server = tcp;
  lock = RedisLock::Acquire("job", options);
  EXPECT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr(absl::StrCat("127.0.0.1:", server_->port())));

  // A listener that accepts connections (the kernel's backlog) but never
  // answers: the reply timeout ends it.
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof address;
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address),
            0);
  ASSERT_EQ(listen(listener, 8), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &size),
            0);
  options.server = absl::StrCat("redis://127.0.0.1:", ntohs(address.sin_port));
  const absl::Time start = absl::Now();
  lock = RedisLock::Acquire("job", options);
  const absl::Duration took = absl::Now() - start;
  close(listener);
  EXPECT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr(options.server));
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Milliseconds(300) + kPrompt);
}

TEST(RedisPasswordTest, PasswordsComeFromTheUrlAFileOrTheEnvironmentNeverShown) {
  constexpr char kPassword[] = "pw-Zq81-secret";
  RedisServer::Options server_options;
  server_options.password = kPassword;
  absl::StatusOr<std::unique_ptr<RedisServer>> server =
      RedisServer::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();
  ScopedEnv no_password(internal::kRedisPasswordEnv, std::nullopt);
  ScopedEnv no_password_file(internal::kRedisPasswordFileEnv, std::nullopt);
  const std::string host = absl::StrCat("127.0.0.1:", (*server)->port());
  RedisLockOptions options;
  options.timeout = absl::ZeroDuration();

  options.server = "redis://" + host;
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("job", options);
  EXPECT_TRUE(absl::IsPermissionDenied(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()),
              HasSubstr(internal::kRedisPasswordFileEnv));

  options.server = absl::StrCat("redis://:wrong-Xy7@", host);
  lock = RedisLock::Acquire("job", options);
  EXPECT_TRUE(absl::IsPermissionDenied(lock.status())) << lock.status();
  EXPECT_THAT(std::string(lock.status().message()), Not(HasSubstr("wrong-Xy7")));

  // From the URL (also as the default user, and percent-encoded).
  for (const std::string& url :
       {absl::StrCat("redis://:", kPassword, "@", host),
        absl::StrCat("redis://default:", kPassword, "@", host, "/0"),
        absl::StrCat("redis://:pw%2DZq81-secret@", host)}) {
    options.server = url;
    lock = RedisLock::Acquire("job", options);
    ASSERT_TRUE(lock.ok()) << lock.status();
    EXPECT_THAT(lock->server(), Not(HasSubstr(kPassword)));
    // Another holder's refusal names the server, never the password.
    absl::StatusOr<RedisLock> second = RedisLock::Acquire("job", options);
    EXPECT_TRUE(absl::IsUnavailable(second.status())) << second.status();
    EXPECT_THAT(std::string(second.status().message()),
                Not(HasSubstr(kPassword)));
    ASSERT_TRUE(lock->Release().ok());
  }

  // From the environment.
  options.server = "unix://" + (*server)->socket_path();
  {
    ScopedEnv password(internal::kRedisPasswordEnv, kPassword);
    lock = RedisLock::Acquire("job", options);
    ASSERT_TRUE(lock.ok()) << lock.status();
    ASSERT_TRUE(lock->Release().ok());
  }

  // From a file: named in the options, or by the environment.
  const std::string dir = MakeTempDir();
  const std::string file = dir + "/redis-password";
  {
    const int fd = open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    const std::string line = absl::StrCat(kPassword, "\n");
    ASSERT_EQ(write(fd, line.data(), line.size()),
              static_cast<ssize_t>(line.size()));
    close(fd);
  }
  options.password_file = file;
  lock = RedisLock::Acquire("job", options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  ASSERT_TRUE(lock->Release().ok());
  options.password_file.clear();
  {
    ScopedEnv password_file(internal::kRedisPasswordFileEnv, file);
    lock = RedisLock::Acquire("job", options);
    ASSERT_TRUE(lock.ok()) << lock.status();
    ASSERT_TRUE(lock->Release().ok());
  }
  options.password_file = dir + "/missing";
  lock = RedisLock::Acquire("job", options);
  EXPECT_FALSE(lock.ok());
  EXPECT_THAT(std::string(lock.status().message()), HasSubstr(dir + "/missing"));
  unlink(file.c_str());
}

TEST_F(RedisLockTest, ATryOnAHeldLockNamesTheHolderAndListsShowIt) {
  RedisLockOptions options = Options();
  options.command = "nightly-import --all";
  Pipe ready, release;
  Child holder = HoldInChild("import", options, ready, release);
  const uint64_t token = ReadToken(ready);
  ASSERT_NE(token, 0u);

  RedisLockOptions try_once = Options();
  try_once.timeout = absl::ZeroDuration();
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("import", try_once);
  ASSERT_TRUE(absl::IsUnavailable(lock.status())) << lock.status();
  const std::string message(lock.status().message());
  EXPECT_THAT(message, HasSubstr("'import'"));
  EXPECT_THAT(message, HasSubstr(server_->socket_path()));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("pid ", holder.pid())));
  EXPECT_THAT(message, HasSubstr("nightly-import --all"));
  EXPECT_THAT(message, HasSubstr(absl::StrCat("fencing token ", token)));
  // The seam's payload says it is held (not an unreachable server, also
  // Unavailable), and by whom.
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  const std::optional<HolderInfo> refusal = HolderFromStatus(lock.status());
  ASSERT_TRUE(refusal.has_value());
  EXPECT_EQ(refusal->resource, "import");
  ASSERT_EQ(refusal->holders.size(), 1u);
  EXPECT_EQ(refusal->holders[0].pid, holder.pid());
  EXPECT_EQ(refusal->holders[0].host, host);
  RedisLockOptions briefly = Options();
  briefly.timeout = absl::Milliseconds(50);
  lock = RedisLock::Acquire("import", briefly);
  ASSERT_TRUE(absl::IsDeadlineExceeded(lock.status())) << lock.status();
  EXPECT_TRUE(HolderFromStatus(lock.status()).has_value());

  absl::StatusOr<std::optional<RedisLockHolder>> found =
      FindRedisLockHolder("import", Options());
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->pid, holder.pid());
  EXPECT_EQ((*found)->fencing_token, token);
  EXPECT_EQ((*found)->command, "nightly-import --all");
  EXPECT_GT((*found)->lease_left, absl::ZeroDuration());
  EXPECT_LE((*found)->lease_left, absl::Seconds(30));
  EXPECT_LE((*found)->since, absl::Now());
  EXPECT_EQ((*found)->host, host);

  absl::StatusOr<RedisLock> other = RedisLock::Acquire("other", Options());
  ASSERT_TRUE(other.ok()) << other.status();
  absl::StatusOr<std::vector<RedisLockHolder>> listed = ListRedisLocks(Options());
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].name, "import");
  EXPECT_EQ((*listed)[1].name, "other");
  EXPECT_EQ((*listed)[1].pid, getpid());

  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  found = FindRedisLockHolder("import", Options());
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_FALSE(found->has_value());
  ASSERT_TRUE(other->Release().ok());
  listed = ListRedisLocks(Options());
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_TRUE(listed->empty());
}

TEST_F(RedisLockTest, AKilledHoldersLockIsTakenWhenItsLeaseEndsNotBefore) {
  constexpr absl::Duration kLease = absl::Seconds(1);
  Pipe ready, release;
  Child holder = HoldInChild("killed", Options(kLease), ready, release);
  ASSERT_NE(ReadToken(ready), 0u);
  holder.Kill(SIGKILL);
  EXPECT_EQ(holder.Wait(), 128 + SIGKILL);
  // The lease left, read between `before` and `after`: the lock expires
  // between before + left and after + left.
  const absl::Time before = absl::Now();
  absl::StatusOr<std::optional<RedisLockHolder>> found =
      FindRedisLockHolder("killed", Options());
  const absl::Time after = absl::Now();
  ASSERT_TRUE(found.ok() && found->has_value()) << found.status();
  const absl::Duration left = (*found)->lease_left;
  EXPECT_GT(left, absl::ZeroDuration());

  RedisLockOptions options = Options(kLease);
  options.timeout = kLease + kPrompt;  // a waiter never woken fails, not hangs
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("killed", options);
  const absl::Time acquired = absl::Now();
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_GE(acquired, before + left - absl::Milliseconds(2)) << "before the lease ended";
  EXPECT_LT(acquired, after + left + absl::Milliseconds(250))
      << "not when the lease ended";
}

TEST_F(RedisLockTest, AStoppedHolderLosesItAndItsReleaseLeavesTheNewHolderAlone) {
  constexpr absl::Duration kLease = absl::Milliseconds(600);
  Pipe ready, resumed;
  Child holder = Child::Fork([&] {
    absl::StatusOr<RedisLock> lock = RedisLock::Acquire("stopped", Options(kLease));
    if (!lock.ok()) return 2;
    const uint64_t token = lock->fencing_token();
    if (write(ready.write_fd(), &token, sizeof token) != sizeof token) return 3;
    if (resumed.Receive(absl::Seconds(30)) != '.') return 4;
    if (lock->held()) return 5;
    if (!WaitLost(lock->lost(), kPrompt)) return 6;
    if (!absl::IsAborted(lock->Release())) return 7;
    return 0;
  });
  const uint64_t old_token = ReadToken(ready);
  ASSERT_NE(old_token, 0u);
  holder.Kill(SIGSTOP);

  RedisLockOptions options = Options(kLease);
  options.timeout = absl::Seconds(10);
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("stopped", options);
  ASSERT_TRUE(lock.ok()) << lock.status();
  EXPECT_GT(lock->fencing_token(), old_token);

  holder.Kill(SIGCONT);
  resumed.Send();
  EXPECT_EQ(holder.Wait(), 0)
      << "2-4: setup; 5: still held; 6: lost() not cancelled; 7: Release() "
         "not Aborted";
  absl::StatusOr<std::optional<RedisLockHolder>> found =
      FindRedisLockHolder("stopped", Options());
  ASSERT_TRUE(found.ok() && found->has_value()) << found.status();
  EXPECT_EQ((*found)->fencing_token, lock->fencing_token());
  EXPECT_EQ((*found)->pid, getpid());
  EXPECT_TRUE(lock->held());
  EXPECT_FALSE(lock->lost().IsCancelled());
  EXPECT_TRUE(lock->Release().ok());
}

TEST_F(RedisLockTest, AHolderLearnsOfARestartedServerWithinTheLease) {
  constexpr absl::Duration kLease = absl::Seconds(1);
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("restarted", Options(kLease));
  ASSERT_TRUE(lock.ok()) << lock.status();
  const absl::Time acquired = absl::Now();
  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE(WaitLost(lock->lost(), kLease + kPrompt));
  EXPECT_LT(absl::Now() - acquired, kLease);
  EXPECT_FALSE(lock->held());
  EXPECT_TRUE(absl::IsAborted(lock->Release()));
  // The counter is gone with the data, yet tokens keep increasing.
  absl::StatusOr<RedisLock> again = RedisLock::Acquire("restarted", Options(kLease));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_GT(again->fencing_token(), lock->fencing_token());
}

TEST_F(RedisLockTest, AHolderLearnsOfAStoppedServerWithinTheLease) {
  constexpr absl::Duration kLease = absl::Seconds(1);
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("gone", Options(kLease));
  ASSERT_TRUE(lock.ok()) << lock.status();
  const absl::Time acquired = absl::Now();
  server_->Kill();
  ASSERT_TRUE(WaitLost(lock->lost(), kLease + kPrompt));
  EXPECT_LT(absl::Now() - acquired, kLease);
  EXPECT_FALSE(lock->held());
  const absl::Status released = lock->Release();
  EXPECT_TRUE(absl::IsUnavailable(released)) << released;
  EXPECT_THAT(std::string(released.message()), HasSubstr(server_->socket_path()));
}

TEST_F(RedisLockTest, AHolderLearnsOfAHungServerWithinTheLease) {
  constexpr absl::Duration kLease = absl::Seconds(1);
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("hung", Options(kLease));
  ASSERT_TRUE(lock.ok()) << lock.status();
  const absl::Time acquired = absl::Now();
  server_->Pause();
  const bool lost = WaitLost(lock->lost(), kLease + kPrompt);
  const absl::Duration took = absl::Now() - acquired;
  server_->Resume();
  ASSERT_TRUE(lost);
  EXPECT_LT(took, kLease);
  EXPECT_FALSE(lock->held());
}

TEST_F(RedisLockTest, AWaiterWhoseSubscriptionDropsSubscribesAgainAndGetsTheLock) {
  Pipe ready, release;
  Child holder = HoldInChild("dropped", Options(), ready, release);
  ASSERT_NE(ReadToken(ready), 0u);
  absl::Status status;
  std::atomic<bool> released{false};
  bool acquired_before_release = false;
  std::thread waiter([&] {
    RedisLockOptions options = Options();
    options.timeout = absl::Seconds(10);  // fails, rather than hangs
    absl::StatusOr<RedisLock> lock = RedisLock::Acquire("dropped", options);
    acquired_before_release = !released;
    status = lock.status();
  });
  ASSERT_TRUE(WaitForSubscribers("dropped", 1));
  absl::StatusOr<std::string> killed =
      server_->Command({"CLIENT", "KILL", "TYPE", "pubsub"});
  ASSERT_TRUE(killed.ok()) << killed.status();
  EXPECT_EQ(*killed, "1");
  EXPECT_TRUE(WaitForSubscribers("dropped", 1)) << "not subscribed again";
  released = true;
  const absl::Time release_sent = absl::Now();
  release.Send();
  waiter.join();
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_FALSE(acquired_before_release);
  EXPECT_LT(absl::Now() - release_sent, kPrompt);
  EXPECT_EQ(holder.Wait(), 0);
}

TEST_F(RedisLockTest, AWaiterReportsAServerThatGoesAway) {
  Pipe ready, release;
  Child holder = HoldInChild("vanishing", Options(), ready, release);
  ASSERT_NE(ReadToken(ready), 0u);
  absl::Status status;
  std::thread waiter([&] {
    RedisLockOptions options = Options();
    options.io_timeout = absl::Milliseconds(500);
    status = RedisLock::Acquire("vanishing", options).status();
  });
  ASSERT_TRUE(WaitForSubscribers("vanishing", 1));
  const absl::Time killed = absl::Now();
  server_->Kill();
  waiter.join();
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(server_->socket_path()));
  EXPECT_LT(absl::Now() - killed, kPrompt);
}

TEST_F(RedisLockTest, ABlockedWaiterSendsNoCommandsAndUsesNoCpu) {
  Pipe ready, release;
  Child holder = HoldInChild("idle", Options(), ready, release);
  ASSERT_NE(ReadToken(ready), 0u);
  Child waiter = Child::Fork([&] {
    return RedisLock::Acquire("idle", Options()).ok() ? 0 : 2;
  });
  ASSERT_TRUE(WaitForSubscribers("idle", 1));
  const std::vector<std::string> lock_commands = {"evalsha", "eval",
                                                  "subscribe", "ping"};
  auto count = [&] {
    int64_t total = 0;
    for (const std::string& command : lock_commands) {
      absl::StatusOr<int64_t> calls = server_->CallsOf(command);
      EXPECT_TRUE(calls.ok()) << calls.status();
      total += calls.value_or(0);
    }
    return total;
  };
  const int64_t commands_before = count();
  const absl::Duration cpu_before = CpuTimeOf(waiter.pid());
  absl::SleepFor(absl::Seconds(1));  // the span measured, not a sync
  const absl::Duration cpu_used = CpuTimeOf(waiter.pid()) - cpu_before;
  EXPECT_EQ(count() - commands_before, 0) << "the waiter sent commands";
  EXPECT_LE(cpu_used, absl::Milliseconds(20));
  release.Send();
  EXPECT_EQ(holder.Wait(), 0);
  EXPECT_EQ(waiter.Wait(), 0);
}

TEST_F(RedisLockTest, ProcessesExcludeEachOtherAndTokensIncreaseInOrder) {
  constexpr int kProcesses = 4;
  constexpr int kSections = 100;
  struct Shared {
    SharedCounters counters;
    std::atomic<int> next{0};
    uint64_t tokens[kProcesses * kSections];
  };
  void* memory = mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(memory, MAP_FAILED);
  Shared* shared = new (memory) Shared;
  std::vector<Child> workers;
  for (int i = 0; i < kProcesses; ++i) {
    workers.push_back(Child::Fork([&, i] {
      RedisLockOptions options = Options(absl::Seconds(5));
      // Half of them over TCP: both transports reach the same lock.
      if (i % 2 == 1) options.server = server_->tcp_url();
      for (int section = 0; section < kSections; ++section) {
        absl::StatusOr<RedisLock> lock = RedisLock::Acquire("counted", options);
        if (!lock.ok()) return 2;
        shared->counters.Enter();
        shared->tokens[shared->next++] = lock->fencing_token();
        shared->counters.Leave();
        if (!lock->Release().ok()) return 3;
      }
      return 0;
    }));
  }
  for (Child& worker : workers) EXPECT_EQ(worker.Wait(), 0);
  EXPECT_EQ(shared->counters.most_inside.load(), 1);
  ASSERT_EQ(shared->next.load(), kProcesses * kSections);
  for (int i = 1; i < kProcesses * kSections; ++i) {
    ASSERT_GT(shared->tokens[i], shared->tokens[i - 1]) << "section " << i;
  }
  munmap(memory, sizeof(Shared));
}

TEST_F(RedisLockTest, RunExclusiveOverTheRedisBackend) {
  std::unique_ptr<LockBackend> backend = NewRedisLockBackend(Options());
  auto try_elsewhere = [&] {
    Child child = Child::Fork([&] {
      RedisLockOptions options = Options();
      options.timeout = absl::ZeroDuration();
      absl::StatusOr<RedisLock> lock = RedisLock::Acquire("exclusive", options);
      if (lock.ok()) return 0;
      return absl::IsUnavailable(lock.status()) ? 1 : 2;
    });
    return child.Wait();
  };
  absl::StatusOr<int> result = RunExclusive(
      *backend, "exclusive", AcquireOptions(),
      [&](const CancellationToken& lost, int base) -> absl::StatusOr<int> {
        if (lost.IsCancelled()) return absl::AbortedError("lost");
        return base + try_elsewhere();
      },
      41);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, 42) << "the lock was not held while fn ran";
  EXPECT_EQ(try_elsewhere(), 0) << "not released after fn";

  auto compact = Exclusive(*backend, "exclusive", AcquireOptions(),
                           [&] { EXPECT_EQ(try_elsewhere(), 1); });
  EXPECT_TRUE(compact().ok());
  EXPECT_TRUE(compact().ok());
}

TEST_F(RedisLockTest, AHolderRenewsOncePerThirdOfTheLease) {
  absl::StatusOr<int64_t> before = server_->CallsOf("evalsha");
  ASSERT_TRUE(before.ok()) << before.status();
  absl::StatusOr<RedisLock> lock =
      RedisLock::Acquire("steady", Options(absl::Milliseconds(300)));
  ASSERT_TRUE(lock.ok()) << lock.status();
  // The span measured, not a synchronisation: about 10 renewals in it.
  absl::SleepFor(absl::Seconds(1));
  EXPECT_TRUE(lock->held());
  ASSERT_TRUE(lock->Release().ok());
  absl::StatusOr<int64_t> after = server_->CallsOf("evalsha");
  ASSERT_TRUE(after.ok()) << after.status();
  // Acquire, release, and one renewal per 100 ms (a slow machine does
  // fewer): never a busy loop.
  EXPECT_LE(*after - *before, 2 + 10 + 3);
  EXPECT_GE(*after - *before, 2 + 3);
}

TEST_F(RedisLockTest, TheRenewalThreadTakesNoSignals) {
  Child child = Child::Fork([&] {
    absl::StatusOr<RedisLock> lock = RedisLock::Acquire("masked", Options());
    if (!lock.ok()) return 2;
    // The fork child's threads: this one and the renewal thread.
    const std::string self = absl::StrCat(gettid());
    int others = 0;
    DIR* tasks = opendir("/proc/self/task");
    if (tasks == nullptr) return 3;
    while (const dirent* entry = readdir(tasks)) {
      const std::string task = entry->d_name;
      if (task == "." || task == ".." || task == self) continue;
      ++others;
      const std::string status =
          ReadFileOrEmpty(absl::StrCat("/proc/self/task/", task, "/status"));
      for (absl::string_view line : absl::StrSplit(status, '\n')) {
        if (!absl::ConsumePrefix(&line, "SigBlk:\t")) continue;
        uint64_t blocked = 0;
        if (!absl::SimpleHexAtoi(line, &blocked)) return 4;
        for (int signal_number : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGPIPE}) {
          if ((blocked >> (signal_number - 1) & 1) == 0) return 10 + signal_number;
        }
      }
    }
    closedir(tasks);
    return others == 1 ? 0 : 5;
  });
  EXPECT_EQ(child.Wait(), 0);
}

TEST_F(RedisLockTest, ScriptNamesAreTheServersSha1) {
  // Lengths around SHA-1's 64-byte blocks and its 56-byte padding limit.
  for (const int size : {0, 46, 47, 48, 54, 55, 56, 119, 200}) {
    const std::string script = absl::StrCat("return '", std::string(size, 'x'), "'");
    absl::StatusOr<std::string> sha = server_->Command({"SCRIPT", "LOAD", script});
    ASSERT_TRUE(sha.ok()) << sha.status();
    EXPECT_EQ(internal::Sha1Hex(script), *sha);
  }
}

}  // namespace
}  // namespace onlyone::testing
