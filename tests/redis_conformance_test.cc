// The Redis lock passes the LockBackend conformance suite
// (tests/backend_conformance.h) against a real redis-server that this test
// starts, over its unix socket and over loopback TCP.

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "onlyone/redis_backend.h"
#include "tests/backend_conformance.h"
#include "tests/redis_server.h"

namespace onlyone::testing {
namespace {

// A lease short enough that the killed-holder case ends quickly.
constexpr absl::Duration kLease = absl::Seconds(1);

// Started before the first test, killed after the last; forked children
// inherit the pointer and use the same server.
RedisServer* server = nullptr;

class RedisServerEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RedisServer>> started = RedisServer::Start();
    ASSERT_TRUE(started.ok()) << started.status();
    server = started->release();
  }
  void TearDown() override {
    delete server;
    server = nullptr;
  }
};

::testing::Environment* const environment =
    ::testing::AddGlobalTestEnvironment(new RedisServerEnvironment);

std::unique_ptr<LockBackend> Backend(bool tcp) {
  RedisLockOptions options;
  options.server = tcp ? server->tcp_url() : server->unix_url();
  options.lease = kLease;
  return NewRedisLockBackend(options);
}

// The name is the test's private directory and the lock's name there, so
// no two tests share a lock on the one server.
std::string Resource(const std::string& dir, const std::string& name) {
  return dir + "/" + name;
}

INSTANTIATE_TEST_SUITE_P(
    Redis, BackendConformanceTest,
    ::testing::Values(
        BackendUnderTest{"redis_unix", [] { return Backend(/*tcp=*/false); },
                         Resource, /*shared_holders=*/false,
                         /*fencing_tokens=*/true,
                         /*freed_after_crash_within=*/kLease},
        BackendUnderTest{"redis_tcp", [] { return Backend(/*tcp=*/true); },
                         Resource, /*shared_holders=*/false,
                         /*fencing_tokens=*/true,
                         /*freed_after_crash_within=*/kLease}),
    BackendName);

}  // namespace
}  // namespace onlyone::testing
