#include "onlyone/internal/redis_connection.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "onlyone/internal/interruptible_wait.h"
#include "onlyone/internal/posix_error.h"
#include "onlyone/internal/retry.h"
#include "onlyone/internal/sha1.h"

namespace onlyone::internal {
namespace {

// Blocks SIGPIPE in the calling thread for a scope; a SIGPIPE that a write
// in the scope raised (thread-directed, so pending on this thread) is
// discarded before the mask is restored, unless one was pending before.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_mask_);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        const struct timespec now = {0, 0};
        RetryOnEintr([&] { return sigtimedwait(&pipe_, nullptr, &now); });
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_mask_;
  bool was_pending_ = false;
};

struct timeval TimevalOf(absl::Duration timeout) {
  timeout = std::max(timeout, absl::Milliseconds(1));
  return absl::ToTimeval(timeout);
}

RedisReply Copy(const redisReply& reply) {
  RedisReply copy;
  switch (reply.type) {
    case REDIS_REPLY_INTEGER:
      copy.type = RedisReply::Type::kInteger;
      copy.integer = reply.integer;
      break;
    case REDIS_REPLY_STRING:
      copy.type = RedisReply::Type::kString;
      copy.text.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_STATUS:
      copy.type = RedisReply::Type::kStatus;
      copy.text.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_ERROR:
      copy.type = RedisReply::Type::kError;
      copy.text.assign(reply.str, reply.len);
      break;
    case REDIS_REPLY_ARRAY:
      copy.type = RedisReply::Type::kArray;
      for (size_t i = 0; i < reply.elements; ++i) {
        copy.elements.push_back(Copy(*reply.element[i]));
      }
      break;
    default:
      copy.type = RedisReply::Type::kNil;
  }
  return copy;
}

bool IsLoginError(absl::string_view error) {
  return absl::StartsWith(error, "NOAUTH") ||
         absl::StartsWith(error, "WRONGPASS") ||
         absl::StartsWith(error, "NOPERM") ||
         absl::StartsWith(error, "ERR invalid password") ||
         absl::StartsWith(error, "ERR AUTH");
}

}  // namespace

RedisScript::RedisScript(std::string source)
    : source_(std::move(source)), sha1_(Sha1Hex(source_)) {}

RedisConnection::RedisConnection(redisContext* context, std::string server)
    : context_(context), server_(std::move(server)) {}

RedisConnection::~RedisConnection() { redisFree(context_); }

absl::StatusOr<std::unique_ptr<RedisConnection>> RedisConnection::Connect(
    const RedisEndpoint& endpoint, absl::Duration timeout) {
  const std::string server = endpoint.Describe();
  const struct timeval limit = TimevalOf(timeout);
  redisContext* context =
      endpoint.transport == RedisEndpoint::Transport::kUnix
          ? redisConnectUnixWithTimeout(endpoint.socket_path.c_str(), limit)
          : redisConnectWithTimeout(endpoint.host.c_str(), endpoint.port,
                                    limit);
  if (context == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat(server, ": cannot allocate a connection"));
  }
  if (context->err != 0) {
    absl::Status status = absl::UnavailableError(
        absl::StrCat(server, ": cannot connect: ", context->errstr));
    redisFree(context);
    return status;
  }
  std::unique_ptr<RedisConnection> connection(
      new RedisConnection(context, server));
  const int flags = fcntl(context->fd, F_GETFD);
  if (flags < 0 || fcntl(context->fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
    return PosixError(absl::StrCat(server, ": fcntl(FD_CLOEXEC)"), errno);
  }
  if (absl::Status status = connection->SetTimeout(timeout); !status.ok()) {
    return status;
  }
  // A server that vanished without closing the connection (a host down)
  // breaks it in time, instead of leaving a waiter with a dead socket.
  if (endpoint.transport == RedisEndpoint::Transport::kTcp &&
      redisEnableKeepAlive(context) != REDIS_OK) {
    return connection->IoError("enabling TCP keep-alive");
  }
  if (!endpoint.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!endpoint.user.empty()) auth.push_back(endpoint.user);
    auth.push_back(endpoint.password);
    absl::StatusOr<RedisReply> reply = connection->Command(auth);
    if (!reply.ok()) return reply.status();
    if (reply->type == RedisReply::Type::kError) {
      return absl::PermissionDeniedError(
          absl::StrCat(server, ": the server refused the login: ", reply->text));
    }
  }
  // Always sent, even for database 0: a server that wants a password
  // says so here (NOAUTH) rather than at the first lock.
  absl::StatusOr<RedisReply> reply =
      connection->Command({"SELECT", absl::StrCat(endpoint.db)});
  if (!reply.ok()) return reply.status();
  if (reply->type == RedisReply::Type::kError) {
    if (IsLoginError(reply->text)) {
      return absl::PermissionDeniedError(absl::StrCat(
          server, ": the server wants a password: ", reply->text,
          " (give it in the URL, in the file named by $",
          kRedisPasswordFileEnv, " or in $", kRedisPasswordEnv, ")"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        server, ": selecting database ", endpoint.db, ": ", reply->text));
  }
  return connection;
}

absl::Status RedisConnection::SetTimeout(absl::Duration timeout) {
  if (timeout == timeout_) return absl::OkStatus();
  if (redisSetTimeout(context_, TimevalOf(timeout)) != REDIS_OK) {
    return IoError("setting the timeout");
  }
  timeout_ = timeout;
  return absl::OkStatus();
}

absl::Status RedisConnection::IoError(absl::string_view doing) {
  broken_ = true;
  // hiredis reports a read timeout (SO_RCVTIMEO) as EAGAIN's text.
  const absl::string_view errstr = context_->errstr;
  const absl::string_view reason =
      absl::StrContains(errstr, "Resource temporarily unavailable")
          ? absl::string_view("no reply in time")
          : errstr;
  return absl::UnavailableError(
      absl::StrCat(server_, ": ", doing, ": ",
                   reason.empty() ? "connection broken" : reason));
}

absl::StatusOr<RedisReply> RedisConnection::Command(
    const std::vector<std::string>& argv) {
  if (broken_) return absl::UnavailableError(server_ + ": connection broken");
  std::vector<const char*> pointers;
  std::vector<size_t> lengths;
  for (const std::string& arg : argv) {
    pointers.push_back(arg.data());
    lengths.push_back(arg.size());
  }
  void* raw = nullptr;
  {
    SigpipeGuard no_sigpipe;
    errno = 0;
    raw = redisCommandArgv(context_, static_cast<int>(argv.size()),
                           pointers.data(), lengths.data());
  }
  if (raw == nullptr) {
    return IoError(absl::StrCat("sending ", argv.empty() ? "" : argv[0]));
  }
  RedisReply reply = Copy(*static_cast<redisReply*>(raw));
  freeReplyObject(raw);
  return reply;
}

absl::StatusOr<RedisReply> RedisConnection::Eval(
    const RedisScript& script, const std::vector<std::string>& keys,
    const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"EVALSHA", script.sha1(),
                                   absl::StrCat(keys.size())};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<RedisReply> reply = Command(argv);
  if (reply.ok() && reply->type == RedisReply::Type::kError &&
      absl::StartsWith(reply->text, "NOSCRIPT")) {
    argv[0] = "EVAL";
    argv[1] = script.source();
    reply = Command(argv);
  }
  if (reply.ok() && reply->type == RedisReply::Type::kError) {
    if (IsLoginError(reply->text)) {
      return absl::PermissionDeniedError(
          absl::StrCat(server_, ": ", reply->text));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(server_, ": the lock script failed: ", reply->text));
  }
  return reply;
}

absl::StatusOr<bool> RedisConnection::TakeBufferedReply() {
  void* raw = nullptr;
  if (redisGetReplyFromReader(context_, &raw) != REDIS_OK) {
    return IoError("reading a message");
  }
  if (raw == nullptr) return false;
  freeReplyObject(raw);
  return true;
}

absl::StatusOr<RedisWaitResult> RedisConnection::WaitForMessage(
    absl::Time deadline, int cancel_fd) {
  if (broken_) return absl::UnavailableError(server_ + ": connection broken");
  for (;;) {
    absl::StatusOr<bool> buffered = TakeBufferedReply();
    if (!buffered.ok()) return buffered.status();
    if (*buffered) return RedisWaitResult::kMessage;
    int timeout_ms = -1;
    if (deadline != absl::InfiniteFuture()) {
      const absl::Duration left = deadline - MonotonicNow();
      if (left <= absl::ZeroDuration()) return RedisWaitResult::kDeadline;
      // Rounded up: waking a little late is harmless, early is a spin.
      timeout_ms = static_cast<int>(std::min<int64_t>(
          absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))),
          24 * 3600 * 1000));
    }
    struct pollfd fds[2] = {{context_->fd, POLLIN, 0}, {cancel_fd, POLLIN, 0}};
    const int ready = poll(fds, cancel_fd >= 0 ? 2 : 1, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return PosixError(absl::StrCat(server_, ": poll"), errno);
    }
    if (cancel_fd >= 0 && fds[1].revents != 0) {
      return RedisWaitResult::kCancelled;
    }
    if (fds[0].revents != 0 && redisBufferRead(context_) != REDIS_OK) {
      return IoError("waiting for a message");
    }
  }
}

}  // namespace onlyone::internal
