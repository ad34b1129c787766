// One connection to a Redis server: the only code of onlyone that speaks
// the protocol (through hiredis), so that no public header shows hiredis.
//
// Example:
//   absl::StatusOr<std::unique_ptr<RedisConnection>> redis =
//       RedisConnection::Connect(endpoint, absl::Seconds(5));
//   if (!redis.ok()) return redis.status();  // Unavailable, names the server
//   absl::StatusOr<RedisReply> reply = (*redis)->Command({"INCR", "n"});
//
//   // A subscriber:
//   (*subscriber)->Command({"SUBSCRIBE", channel});
//   absl::StatusOr<RedisWaitResult> woken =
//       (*subscriber)->WaitForMessage(deadline, cancel_fd);
//
// Contract:
//  * Connect() connects over TCP or a unix socket within `timeout`, logs in
//    (AUTH [user] password) and selects the database; every later command
//    waits at most `timeout` for its reply (SetTimeout changes it). The
//    descriptor is close-on-exec (hiredis 0.14 opens it without
//    SOCK_CLOEXEC; it is set at once after connecting).
//  * Failures are statuses naming the server (RedisEndpoint::Describe(),
//    never the password): Unavailable when it cannot be reached or the
//    connection breaks (then broken() is true and the connection must be
//    dropped), PermissionDenied when it refuses the login, and
//    FailedPrecondition for any other error reply. An error reply to
//    Command() is returned as a reply of type kError, not as a status.
//  * A write to a connection the server closed never raises SIGPIPE: the
//    calling thread blocks SIGPIPE around its writes and discards the
//    signal it caused.
//  * Thread safety: one thread at a time per connection; none shared
//    across fork().

#ifndef ONLYONE_LIB_INTERNAL_REDIS_CONNECTION_H_
#define ONLYONE_LIB_INTERNAL_REDIS_CONNECTION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "onlyone/internal/redis_endpoint.h"

struct redisContext;

namespace onlyone::internal {

// A reply, copied out of hiredis's.
struct RedisReply {
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string text;  // kString, kStatus, kError
  std::vector<RedisReply> elements;  // kArray
};

// A Lua script and its SHA-1, for EVALSHA.
class RedisScript {
 public:
  explicit RedisScript(std::string source);
  const std::string& source() const { return source_; }
  const std::string& sha1() const { return sha1_; }

 private:
  const std::string source_;
  const std::string sha1_;
};

enum class RedisWaitResult { kMessage, kDeadline, kCancelled };

class RedisConnection {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RedisConnection>>
  Connect(const RedisEndpoint& endpoint, absl::Duration timeout);
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;
  ~RedisConnection();

  // Sets the reply (and write) timeout; costs no system call when it is
  // already `timeout`.
  [[nodiscard]] absl::Status SetTimeout(absl::Duration timeout);

  // Sends one command and waits for its reply.
  [[nodiscard]] absl::StatusOr<RedisReply> Command(
      const std::vector<std::string>& argv);

  // Runs `script` with EVALSHA, and with EVAL when the server does not have
  // it cached (a restarted server, SCRIPT FLUSH). An error reply is a
  // FailedPrecondition naming the server.
  [[nodiscard]] absl::StatusOr<RedisReply> Eval(
      const RedisScript& script, const std::vector<std::string>& keys,
      const std::vector<std::string>& args);

  // For a subscribed connection: waits until a message arrives (a pushed
  // reply of any kind), `deadline` passes (MonotonicNow() clock;
  // InfiniteFuture() for none) or `cancel_fd` (-1 for none) becomes
  // readable. Sends nothing. Unavailable if the connection breaks.
  [[nodiscard]] absl::StatusOr<RedisWaitResult> WaitForMessage(
      absl::Time deadline, int cancel_fd);

  bool broken() const { return broken_; }
  // The server, as RedisEndpoint::Describe() names it.
  const std::string& server() const { return server_; }

 private:
  RedisConnection(redisContext* context, std::string server);

  // The status for the context's I/O error; marks the connection broken.
  absl::Status IoError(absl::string_view doing);
  // A reply hiredis has already read and parsed, if any.
  absl::StatusOr<bool> TakeBufferedReply();

  redisContext* const context_;
  const std::string server_;
  bool broken_ = false;
  absl::Duration timeout_ = absl::ZeroDuration();
};

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_REDIS_CONNECTION_H_
