#include "onlyone/redis_lock.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "onlyone/internal/cancellation_state.h"
#include "onlyone/internal/fork_safe_mutex.h"
#include "onlyone/internal/holder_info.h"
#include "onlyone/internal/interruptible_wait.h"
#include "onlyone/internal/printable.h"
#include "onlyone/internal/redis_connection.h"
#include "onlyone/internal/redis_endpoint.h"
#include "onlyone/internal/small_file.h"
#include "onlyone/internal/thread_signals.h"

namespace onlyone {
namespace internal {
namespace {

constexpr char kLockPrefix[] = "onlyone:lock:";
constexpr char kCounterPrefix[] = "onlyone:token:";
constexpr char kChannelPrefix[] = "onlyone:released:";
constexpr size_t kMaxNameSize = 1000;
constexpr size_t kMaxCommandSize = 256;
constexpr absl::Duration kMinLease = absl::Milliseconds(50);
// Idle connections kept per server and login, for the next Acquire().
constexpr size_t kIdleConnectionsKept = 4;

// The value of a lock key starts with "TOKEN\n"; the scripts compare that
// prefix, so only the holder that got TOKEN extends or deletes it.
//
// KEYS[1] the lock, KEYS[2] the counter; ARGV[1] the lease in ms,
// ARGV[2] the holder description. Returns {1, token} when acquired, or
// {0, pttl, value} when held (pttl -1: no expiry).
const RedisScript& AcquireScript() {
  static const RedisScript* const script = new RedisScript(R"lua(
local value = redis.call('GET', KEYS[1])
if value then
  return {0, redis.call('PTTL', KEYS[1]), value}
end
local token = redis.call('INCR', KEYS[2])
if token == 1 then
  -- A name never used, or a server that lost its data: start from the
  -- server's clock in microseconds, above every token it gave before
  -- (one a microsecond at most) unless its clock went back.
  local now = redis.call('TIME')
  token = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', KEYS[2], string.format('%d', token))
end
redis.call('SET', KEYS[1], string.format('%d', token) .. '\n' .. ARGV[2],
           'PX', ARGV[1])
return {1, token}
)lua");
  return *script;
}

// KEYS[1] the lock; ARGV[1] "TOKEN\n", ARGV[2] the lease in ms. 1 if
// extended, 0 if the lock is not this holder's any more.
const RedisScript& ExtendScript() {
  static const RedisScript* const script = new RedisScript(R"lua(
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
)lua");
  return *script;
}

// KEYS[1] the lock; ARGV[1] "TOKEN\n", ARGV[2] the release channel. 1 if
// deleted (and published), 0 if the lock is not this holder's any more.
const RedisScript& ReleaseScript() {
  static const RedisScript* const script = new RedisScript(R"lua(
local value = redis.call('GET', KEYS[1])
if value and string.sub(value, 1, #ARGV[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
)lua");
  return *script;
}

// KEYS[1] the lock. {} when free, else {value, pttl}.
const RedisScript& InspectScript() {
  static const RedisScript* const script = new RedisScript(R"lua(
local value = redis.call('GET', KEYS[1])
if not value then return {} end
return {value, redis.call('PTTL', KEYS[1])}
)lua");
  return *script;
}

std::string LockKey(absl::string_view name) {
  return absl::StrCat(kLockPrefix, name);
}

std::string TokenPrefix(uint64_t token) { return absl::StrCat(token, "\n"); }

std::string LeaseMilliseconds(absl::Duration lease) {
  return absl::StrCat(absl::ToInt64Milliseconds(lease));
}

// How long before the lease's end, by this host's clock, the lock counts as
// possibly expired: covers the clocks of this host and the server running
// at slightly different rates, and the time a renewal's reply takes.
absl::Duration SafetyMargin(absl::Duration lease) { return lease / 10; }

std::string ThisCommandLine() {
  std::string command_line;
  if (!ReadSmallFile("/proc/self/cmdline", kMaxCommandSize, &command_line)) {
    return "?";
  }
  std::replace(command_line.begin(), command_line.end(), '\0', ' ');
  absl::StripTrailingAsciiWhitespace(&command_line);
  return command_line;
}

std::string ThisHost() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) return "?";
  return host;
}

// "host\npid\nsince_ms\ncommand": the rest of a lock's value after the
// token. The command comes last and may hold anything but is cut short.
std::string HolderDescription(const RedisLockOptions& options,
                              absl::string_view host,
                              absl::string_view command_line) {
  absl::string_view command =
      options.command.empty() ? command_line : options.command;
  command = command.substr(0, kMaxCommandSize);
  return absl::StrCat(host, "\n", getpid(), "\n",
                      absl::ToUnixMillis(absl::Now()), "\n", command);
}

// Parses a lock key's value; false if it is not one of ours.
bool ParseHolder(absl::string_view value, RedisLockHolder* holder) {
  std::vector<absl::string_view> fields =
      absl::StrSplit(value, absl::MaxSplits('\n', 4));
  int64_t since_ms = 0;
  if (fields.size() != 5 || !absl::SimpleAtoi(fields[0], &holder->fencing_token) ||
      !absl::SimpleAtoi(fields[2], &holder->pid) ||
      !absl::SimpleAtoi(fields[3], &since_ms)) {
    return false;
  }
  holder->host = std::string(fields[1]);
  holder->since = absl::FromUnixMillis(since_ms);
  holder->command = std::string(fields[4]);
  return true;
}

RedisLockHolder HolderFromReply(absl::string_view name, absl::string_view value,
                                int64_t pttl) {
  RedisLockHolder holder;
  if (!ParseHolder(value, &holder)) {
    holder = RedisLockHolder();
    holder.command = absl::StrCat("(not an onlyone lock: ", value, ")");
  }
  holder.name = std::string(name);
  holder.lease_left =
      pttl < 0 ? absl::InfiniteDuration() : absl::Milliseconds(pttl);
  return holder;
}

absl::Status CheckName(absl::string_view name) {
  if (name.empty()) {
    return absl::InvalidArgumentError("a Redis lock's name must not be empty");
  }
  if (name.size() > kMaxNameSize) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Redis lock '", Printable(name.substr(0, 64)), "...': the name is ",
        name.size(), " bytes long; at most ", kMaxNameSize));
  }
  for (const char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("Redis lock '", Printable(name),
                       "': a name may not contain control characters"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RedisEndpoint> EndpointFor(const RedisLockOptions& options) {
  absl::StatusOr<RedisEndpoint> endpoint = ParseRedisUrl(options.server);
  if (!endpoint.ok()) return endpoint.status();
  if (absl::Status status = ResolvePassword(options.password_file, *endpoint);
      !status.ok()) {
    return status;
  }
  return endpoint;
}

// The refusal `status` because `holder` holds the lock, carrying it as the
// seam's HolderInfo (lib/lock_holder.h), so that callers tell a held lock
// from an unreachable server, both Unavailable.
absl::Status Refusal(absl::Status status, const RedisLockHolder& holder) {
  HolderInfo info;
  info.resource = holder.name;
  info.holders_known = true;
  LockHolderProcess process;
  process.pid = holder.pid;
  process.name = holder.command;
  process.host = holder.host;
  info.holders.push_back(std::move(process));
  AttachHolder(status, info);
  return status;
}

// A status like `status`, its message prefixed with the lock it concerns.
absl::Status AboutLock(absl::string_view name, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("Redis lock '",
                                                  Printable(name), "': ",
                                                  status.message()));
}

// Idle connections, per server and login, for one process.
class ConnectionPool {
 public:
  absl::StatusOr<std::unique_ptr<RedisConnection>> Take(
      const RedisEndpoint& endpoint, absl::Duration timeout, bool* reused) {
    {
      std::lock_guard<std::mutex> hold(mu_);
      std::vector<std::unique_ptr<RedisConnection>>& idle =
          idle_[endpoint.ConnectionKey()];
      if (!idle.empty()) {
        std::unique_ptr<RedisConnection> connection = std::move(idle.back());
        idle.pop_back();
        *reused = true;
        if (absl::Status status = connection->SetTimeout(timeout);
            status.ok()) {
          return connection;
        }
      }
    }
    *reused = false;
    return RedisConnection::Connect(endpoint, timeout);
  }

  void Give(const RedisEndpoint& endpoint,
            std::unique_ptr<RedisConnection> connection) {
    if (connection == nullptr || connection->broken()) return;
    std::lock_guard<std::mutex> hold(mu_);
    std::vector<std::unique_ptr<RedisConnection>>& idle =
        idle_[endpoint.ConnectionKey()];
    if (idle.size() < kIdleConnectionsKept) idle.push_back(std::move(connection));
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<RedisConnection>>> idle_
      ABSL_GUARDED_BY(mu_);
};

// Runs `script` on a pooled connection, reconnecting once if a pooled one
// turns out broken (the server closed it while idle, or restarted).
absl::StatusOr<RedisReply> EvalPooled(ConnectionPool& pool,
                                      const RedisEndpoint& endpoint,
                                      absl::Duration timeout,
                                      const RedisScript& script,
                                      const std::vector<std::string>& keys,
                                      const std::vector<std::string>& args) {
  for (int attempt = 0;; ++attempt) {
    bool reused = false;
    absl::StatusOr<std::unique_ptr<RedisConnection>> connection =
        pool.Take(endpoint, timeout, &reused);
    if (!connection.ok()) return connection.status();
    absl::StatusOr<RedisReply> reply = (*connection)->Eval(script, keys, args);
    const bool broken = (*connection)->broken();
    pool.Give(endpoint, *std::move(connection));
    if (!broken || !reused || attempt > 0) return reply;
  }
}

}  // namespace

class Renewer;

// One held lock, shared by its RedisLock and the renewal thread.
class RedisLockState {
 public:
  RedisLockState(std::string name, RedisEndpoint endpoint,
                 absl::Duration lease, absl::Duration io_timeout,
                 uint64_t token, absl::Time safe_until)
      : name_(std::move(name)),
        endpoint_(std::move(endpoint)),
        lease_(lease),
        io_timeout_(io_timeout),
        token_(token),
        owner_(getpid()),
        safe_until_(absl::ToUnixNanos(safe_until)) {}

  const std::string& name() const { return name_; }
  const RedisEndpoint& endpoint() const { return endpoint_; }
  absl::Duration lease() const { return lease_; }
  absl::Duration io_timeout() const { return io_timeout_; }
  uint64_t token() const { return token_; }
  const CancellationToken& lost_token() const { return lost_token_; }
  bool InOwner() const { return getpid() == owner_; }
  absl::Time safe_until() const {
    return absl::FromUnixNanos(safe_until_.load(std::memory_order_acquire));
  }

  // Lock-free, so a fork child may ask whatever the parent's threads did.
  bool held() const {
    return InOwner() && !released_.load(std::memory_order_acquire) &&
           !lost_.load(std::memory_order_acquire) &&
           MonotonicNow() < safe_until();
  }
  bool done() const {
    return released_.load(std::memory_order_acquire) ||
           lost_.load(std::memory_order_acquire);
  }

  // A renewal sent at `sent` was confirmed.
  void Confirm(absl::Time sent) {
    safe_until_.store(absl::ToUnixNanos(sent + lease_ - SafetyMargin(lease_)),
                      std::memory_order_release);
  }

  // Marks the lock lost, unless it was released; cancels lost().
  void MarkLost() {
    {
      std::lock_guard<std::mutex> hold(mu_);
      if (released_.load(std::memory_order_acquire)) return;
      lost_.store(true, std::memory_order_release);
    }
    lost_token_.Cancel();
  }

  // Marks it released; returns false if it already was.
  bool MarkReleased() {
    std::lock_guard<std::mutex> hold(mu_);
    return !released_.exchange(true, std::memory_order_acq_rel);
  }

 private:
  const std::string name_;
  const RedisEndpoint endpoint_;
  const absl::Duration lease_;
  const absl::Duration io_timeout_;
  const uint64_t token_;
  const pid_t owner_;
  // Copies share the flag; cancelled by MarkLost() only.
  CancellationToken lost_token_;
  // Nanoseconds on the MonotonicNow() clock.
  std::atomic<int64_t> safe_until_;
  std::atomic<bool> released_{false};
  std::atomic<bool> lost_{false};
  // Orders MarkLost() against MarkReleased(): a released lock is never
  // reported lost.
  std::mutex mu_;
};

namespace {

// The renewal thread of one process: renews every held lock each lease/3
// and reports the ones it cannot renew in time as lost. Started at the
// first lock and never stopped (it sleeps while no lock is held); never
// destroyed, so that it cannot outlive its own state at exit.
class Renewer {
 public:
  void Add(std::shared_ptr<RedisLockState> state) {
    std::lock_guard<std::mutex> hold(mu_);
    const absl::Time next = MonotonicNow() + state->lease() / 3;
    // The key first: in `map[k] = v` C++17 evaluates v (the move) before k.
    const RedisLockState* const key = state.get();
    locks_[key] = Entry{std::move(state), next};
    if (!started_) {
      started_ = true;
      // A process's signals (SIGCHLD for a supervisor's signalfd, SIGTERM)
      // are not its to take.
      internal::NewThreadsBlockSignals blocked;
      std::thread([this] { Run(); }).detach();
    }
    // Waking the thread only when it would sleep past the new lock's first
    // renewal keeps it (and a context switch) off the Acquire() path.
    if (next < wake_) changed_.notify_one();
  }

  void Remove(const RedisLockState* state) {
    std::lock_guard<std::mutex> hold(mu_);
    locks_.erase(state);
  }

 private:
  struct Entry {
    std::shared_ptr<RedisLockState> state;
    absl::Time next_renewal;
  };

  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      const absl::Time now = MonotonicNow();
      absl::Time wake = absl::InfiniteFuture();
      std::vector<std::shared_ptr<RedisLockState>> due;
      for (const auto& [key, entry] : locks_) {
        const absl::Time at =
            std::min(entry.next_renewal, entry.state->safe_until());
        if (at <= now) {
          due.push_back(entry.state);
        } else {
          wake = std::min(wake, at);
        }
      }
      if (due.empty()) {
        wake_ = wake;
        if (wake == absl::InfiniteFuture()) {
          changed_.wait(lock);
        } else {
          // MonotonicNow() is CLOCK_MONOTONIC, which steady_clock is on
          // Linux.
          changed_.wait_until(
              lock, std::chrono::steady_clock::now() +
                        absl::ToChronoNanoseconds(wake - now));
        }
        continue;
      }
      // Busy: it looks at locks_ again before it sleeps, so Add() need not
      // wake it.
      wake_ = absl::InfinitePast();
      lock.unlock();
      std::vector<std::pair<const RedisLockState*, absl::Time>> renewed;
      for (const std::shared_ptr<RedisLockState>& state : due) {
        if (std::optional<absl::Time> next = Renew(*state)) {
          renewed.emplace_back(state.get(), *next);
        } else {
          state->MarkLost();
        }
      }
      lock.lock();
      for (const std::shared_ptr<RedisLockState>& state : due) {
        auto it = locks_.find(state.get());
        if (it == locks_.end()) continue;
        if (state->done()) {
          locks_.erase(it);
          continue;
        }
        for (const auto& [renewed_state, next] : renewed) {
          if (renewed_state == state.get()) it->second.next_renewal = next;
        }
      }
    }
  }

  // Extends `state`'s lease; the time of its next renewal, or nullopt when
  // it is lost.
  std::optional<absl::Time> Renew(RedisLockState& state) {
    if (state.done()) return MonotonicNow();
    const std::string key = state.endpoint().ConnectionKey();
    for (int attempt = 0; attempt < 2; ++attempt) {
      const absl::Time sent = MonotonicNow();
      const absl::Duration left = state.safe_until() - sent;
      if (left <= absl::ZeroDuration()) return std::nullopt;
      const absl::Duration timeout = std::min(left, state.io_timeout());
      std::unique_ptr<RedisConnection>& connection = connections_[key];
      if (connection == nullptr || connection->broken()) {
        absl::StatusOr<std::unique_ptr<RedisConnection>> fresh =
            RedisConnection::Connect(state.endpoint(), timeout);
        if (!fresh.ok()) return std::nullopt;
        connection = *std::move(fresh);
      } else if (!connection->SetTimeout(timeout).ok()) {
        connection.reset();
        continue;
      }
      absl::StatusOr<RedisReply> reply = connection->Eval(
          ExtendScript(), {LockKey(state.name())},
          {TokenPrefix(state.token()), LeaseMilliseconds(state.lease())});
      if (!reply.ok()) {
        if (connection->broken()) {
          connection.reset();
          continue;  // once more on a fresh connection
        }
        return std::nullopt;
      }
      if (reply->type != RedisReply::Type::kInteger || reply->integer != 1) {
        return std::nullopt;  // refused: no longer this holder's lock
      }
      state.Confirm(sent);
      return sent + state.lease() / 3;
    }
    return std::nullopt;
  }

  std::mutex mu_;
  std::condition_variable changed_;
  std::map<const RedisLockState*, Entry> locks_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  // When the sleeping thread will look at locks_ next; InfinitePast()
  // while it is not sleeping (it looks before it sleeps).
  absl::Time wake_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Used by the renewal thread only.
  std::map<std::string, std::unique_ptr<RedisConnection>> connections_;
};

// What one process shares between its Redis locks. A fork child makes its
// own at its first use: the parent's belongs to threads that the child
// does not have (and is kept, unused, rather than freed under them).
struct ProcessRedis {
  explicit ProcessRedis(pid_t owner)
      : pid(owner), host(ThisHost()), command_line(ThisCommandLine()) {}
  const pid_t pid;
  // For holder descriptions, read once: a process's host name and command
  // line do not change while it runs.
  const std::string host;
  const std::string command_line;
  ConnectionPool pool;
  Renewer renewer;
};

ForkSafeMutex process_mu;
ProcessRedis* current_process ABSL_GUARDED_BY(process_mu) = nullptr;
std::vector<ProcessRedis*>* abandoned ABSL_GUARDED_BY(process_mu) = nullptr;

void LockProcessForFork() ABSL_NO_THREAD_SAFETY_ANALYSIS { process_mu.Lock(); }
void UnlockProcessAfterFork() ABSL_NO_THREAD_SAFETY_ANALYSIS {
  process_mu.Unlock();
}

ProcessRedis& CurrentProcess() {
  static const bool fork_handlers_installed = [] {
    pthread_atfork(LockProcessForFork, UnlockProcessAfterFork,
                   UnlockProcessAfterFork);
    return true;
  }();
  (void)fork_handlers_installed;
  process_mu.Lock();
  const pid_t pid = getpid();
  if (current_process == nullptr || current_process->pid != pid) {
    if (current_process != nullptr) {
      if (abandoned == nullptr) abandoned = new std::vector<ProcessRedis*>;
      abandoned->push_back(current_process);
    }
    current_process = new ProcessRedis(pid);
  }
  ProcessRedis& process = *current_process;
  process_mu.Unlock();
  return process;
}

struct TryResult {
  bool acquired = false;
  uint64_t token = 0;
  int64_t pttl = -2;
  std::string holder_value;
};

absl::StatusOr<TryResult> TryAcquire(ConnectionPool& pool,
                                     const RedisEndpoint& endpoint,
                                     absl::Duration timeout,
                                     absl::string_view name,
                                     absl::Duration lease,
                                     const std::string& description) {
  absl::StatusOr<RedisReply> reply = EvalPooled(
      pool, endpoint, timeout, AcquireScript(),
      {LockKey(name), absl::StrCat(kCounterPrefix, name)},
      {LeaseMilliseconds(lease), description});
  if (!reply.ok()) return reply.status();
  TryResult result;
  const std::vector<RedisReply>& fields = reply->elements;
  if (reply->type != RedisReply::Type::kArray || fields.size() < 2 ||
      fields[0].type != RedisReply::Type::kInteger ||
      fields[1].type != RedisReply::Type::kInteger) {
    return absl::InternalError(absl::StrCat(
        endpoint.Describe(), ": the acquire script gave an unexpected reply"));
  }
  result.acquired = fields[0].integer == 1;
  if (result.acquired) {
    result.token = static_cast<uint64_t>(fields[1].integer);
  } else {
    result.pttl = fields[1].integer;
    if (fields.size() > 2) result.holder_value = fields[2].text;
  }
  return result;
}

}  // namespace
}  // namespace internal

std::string RedisLockHolder::Describe() const {
  std::string text = absl::StrCat(
      "pid ", pid, " on host ", internal::Printable(host), " since ",
      absl::FormatTime("%Y-%m-%d %H:%M:%S %Z", since, absl::UTCTimeZone()));
  if (!command.empty()) {
    absl::StrAppend(&text, " (command: ", internal::Printable(command), ")");
  }
  absl::StrAppend(&text, ", fencing token ", fencing_token);
  return text;
}

absl::StatusOr<RedisLock> RedisLock::Acquire(absl::string_view name,
                                             const RedisLockOptions& options) {
  using internal::AboutLock;
  if (absl::Status status = internal::CheckName(name); !status.ok()) {
    return status;
  }
  if (options.lease < internal::kMinLease) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Redis lock '", internal::Printable(name), "': the lease (",
        absl::FormatDuration(options.lease), ") must be at least ",
        absl::FormatDuration(internal::kMinLease)));
  }
  if (options.io_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Redis lock '", internal::Printable(name),
                     "': io_timeout must be positive"));
  }
  absl::StatusOr<internal::RedisEndpoint> endpoint =
      internal::EndpointFor(options);
  if (!endpoint.ok()) return AboutLock(name, endpoint.status());
  const std::string server = endpoint->Describe();
  const absl::Time start = internal::MonotonicNow();
  const bool may_wait = options.timeout > absl::ZeroDuration();
  const absl::Time deadline = options.timeout == absl::InfiniteDuration()
                                  ? absl::InfiniteFuture()
                                  : start + std::max(options.timeout,
                                                     absl::ZeroDuration());
  const absl::Duration io_timeout =
      may_wait ? std::min(options.io_timeout, options.timeout)
               : options.io_timeout;
  internal::ProcessRedis& process = internal::CurrentProcess();
  const std::string description = internal::HolderDescription(
      options, process.host, process.command_line);

  std::unique_ptr<internal::RedisConnection> subscriber;
  std::unique_ptr<internal::CancellationEventFd> cancel_fd;
  const auto holder_of = [&](const internal::TryResult& tried) {
    return internal::HolderFromReply(name, tried.holder_value, tried.pttl);
  };
  const auto holder_text = [&](const internal::TryResult& tried) {
    return holder_of(tried).Describe();
  };
  for (;;) {
    const absl::Time sent = internal::MonotonicNow();
    absl::StatusOr<internal::TryResult> tried = internal::TryAcquire(
        process.pool, *endpoint, io_timeout, name, options.lease, description);
    if (!tried.ok()) return AboutLock(name, tried.status());
    if (tried->acquired) {
      auto state = std::make_shared<internal::RedisLockState>(
          std::string(name), *endpoint, options.lease, options.io_timeout,
          tried->token,
          sent + options.lease - internal::SafetyMargin(options.lease));
      process.renewer.Add(state);
      return RedisLock(std::move(state));
    }
    if (!may_wait) {
      return internal::Refusal(
          absl::UnavailableError(
              absl::StrCat("Redis lock '", internal::Printable(name), "' on ",
                           server, " is held by ", holder_text(*tried))),
          holder_of(*tried));
    }
    if (subscriber == nullptr) {
      // Subscribe, then try again: a release published before the
      // subscription took effect is then seen by that try.
      absl::StatusOr<std::unique_ptr<internal::RedisConnection>> connected =
          internal::RedisConnection::Connect(*endpoint, io_timeout);
      if (!connected.ok()) return AboutLock(name, connected.status());
      absl::StatusOr<internal::RedisReply> subscribed = (*connected)->Command(
          {"SUBSCRIBE", absl::StrCat(internal::kChannelPrefix, name)});
      if (!subscribed.ok()) return AboutLock(name, subscribed.status());
      if (subscribed->type != internal::RedisReply::Type::kArray) {
        return AboutLock(name, absl::FailedPreconditionError(absl::StrCat(
                                   server, ": SUBSCRIBE refused: ",
                                   subscribed->text)));
      }
      subscriber = *std::move(connected);
      if (options.cancellation.has_value() && cancel_fd == nullptr) {
        absl::StatusOr<std::unique_ptr<internal::CancellationEventFd>> fd =
            internal::CancellationEventFd::Create(
                options.cancellation->state());
        if (!fd.ok()) return AboutLock(name, fd.status());
        cancel_fd = *std::move(fd);
      }
      continue;
    }
    // Sleep until a release is published, the holder's lease ends (it may
    // have died) or the deadline.
    absl::Time wake = deadline;
    if (tried->pttl >= 0) {
      wake = std::min(wake, internal::MonotonicNow() +
                                absl::Milliseconds(tried->pttl + 1));
    } else if (tried->pttl == -2) {
      continue;  // gone between the two reads: try again
    }
    absl::StatusOr<internal::RedisWaitResult> woken =
        subscriber->WaitForMessage(wake,
                                   cancel_fd == nullptr ? -1 : cancel_fd->fd());
    if (!woken.ok()) {
      // The subscription broke (the server restarted, a proxy dropped it):
      // subscribe again; if the server is gone, the next try says so.
      subscriber.reset();
      continue;
    }
    if (*woken == internal::RedisWaitResult::kCancelled) {
      return internal::Refusal(
          absl::CancelledError(absl::StrCat(
              "Redis lock '", internal::Printable(name), "' on ", server,
              ": cancelled while waiting; held by ", holder_text(*tried))),
          holder_of(*tried));
    }
    if (*woken == internal::RedisWaitResult::kDeadline &&
        internal::MonotonicNow() >= deadline) {
      return internal::Refusal(
          absl::DeadlineExceededError(absl::StrCat(
              "Redis lock '", internal::Printable(name), "' on ", server,
              ": still held after ", absl::FormatDuration(options.timeout),
              " by ", holder_text(*tried))),
          holder_of(*tried));
    }
  }
}

RedisLock::RedisLock(std::shared_ptr<internal::RedisLockState> state)
    : state_(std::move(state)) {}

RedisLock::RedisLock(RedisLock&& other) noexcept = default;

RedisLock& RedisLock::operator=(RedisLock&& other) noexcept {
  if (this != &other) {
    (void)Release();
    state_ = std::move(other.state_);
  }
  return *this;
}

RedisLock::~RedisLock() { (void)Release(); }

absl::Status RedisLock::Release() {
  if (state_ == nullptr || !state_->InOwner()) return absl::OkStatus();
  internal::RedisLockState& state = *state_;
  if (!state.MarkReleased()) return absl::OkStatus();
  internal::ProcessRedis& process = internal::CurrentProcess();
  process.renewer.Remove(&state);
  const std::string channel =
      absl::StrCat(internal::kChannelPrefix, state.name());
  absl::StatusOr<internal::RedisReply> reply = internal::EvalPooled(
      process.pool, state.endpoint(), state.io_timeout(),
      internal::ReleaseScript(), {internal::LockKey(state.name())},
      {internal::TokenPrefix(state.token()), channel});
  if (!reply.ok()) {
    return internal::AboutLock(
        state.name(),
        absl::Status(reply.status().code(),
                     absl::StrCat(reply.status().message(),
                                  " (releasing; the lease ends on its own)")));
  }
  if (reply->type != internal::RedisReply::Type::kInteger ||
      reply->integer != 1) {
    return absl::AbortedError(absl::StrCat(
        "Redis lock '", internal::Printable(state.name()), "' on ",
        state.endpoint().Describe(), ": fencing token ", state.token(),
        " was lost before Release() (its lease expired, or the server lost "
        "it); whoever holds the lock now was left alone"));
  }
  return absl::OkStatus();
}

bool RedisLock::held() const { return state_ != nullptr && state_->held(); }

uint64_t RedisLock::fencing_token() const {
  return state_ == nullptr ? 0 : state_->token();
}

CancellationToken RedisLock::lost() const {
  return state_ == nullptr ? CancellationToken() : state_->lost_token();
}

std::string RedisLock::name() const {
  return state_ == nullptr ? "" : state_->name();
}

std::string RedisLock::server() const {
  return state_ == nullptr ? "" : state_->endpoint().Describe();
}

absl::StatusOr<std::optional<RedisLockHolder>> FindRedisLockHolder(
    absl::string_view name, const RedisLockOptions& options) {
  if (absl::Status status = internal::CheckName(name); !status.ok()) {
    return status;
  }
  absl::StatusOr<internal::RedisEndpoint> endpoint =
      internal::EndpointFor(options);
  if (!endpoint.ok()) return internal::AboutLock(name, endpoint.status());
  absl::StatusOr<internal::RedisReply> reply = internal::EvalPooled(
      internal::CurrentProcess().pool, *endpoint, options.io_timeout,
      internal::InspectScript(), {internal::LockKey(name)}, {});
  if (!reply.ok()) return internal::AboutLock(name, reply.status());
  if (reply->elements.size() < 2) return std::nullopt;
  return internal::HolderFromReply(name, reply->elements[0].text,
                                   reply->elements[1].integer);
}

absl::StatusOr<std::vector<RedisLockHolder>> ListRedisLocks(
    const RedisLockOptions& options) {
  absl::StatusOr<internal::RedisEndpoint> endpoint =
      internal::EndpointFor(options);
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<std::unique_ptr<internal::RedisConnection>> connection =
      internal::RedisConnection::Connect(*endpoint, options.io_timeout);
  if (!connection.ok()) return connection.status();
  std::vector<std::string> names;
  std::string cursor = "0";
  do {
    absl::StatusOr<internal::RedisReply> reply = (*connection)->Command(
        {"SCAN", cursor, "MATCH", absl::StrCat(internal::kLockPrefix, "*"),
         "COUNT", "1000"});
    if (!reply.ok()) return reply.status();
    if (reply->type != internal::RedisReply::Type::kArray ||
        reply->elements.size() != 2) {
      return absl::FailedPreconditionError(absl::StrCat(
          endpoint->Describe(), ": SCAN failed: ", reply->text));
    }
    cursor = reply->elements[0].text;
    for (const internal::RedisReply& key : reply->elements[1].elements) {
      names.push_back(
          key.text.substr(sizeof(internal::kLockPrefix) - 1));
    }
  } while (cursor != "0");
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::vector<RedisLockHolder> holders;
  for (const std::string& name : names) {
    absl::StatusOr<internal::RedisReply> reply = (*connection)->Eval(
        internal::InspectScript(), {internal::LockKey(name)}, {});
    if (!reply.ok()) return reply.status();
    if (reply->elements.size() < 2) continue;  // released meanwhile
    holders.push_back(internal::HolderFromReply(
        name, reply->elements[0].text, reply->elements[1].integer));
  }
  return holders;
}

}  // namespace onlyone
