// redis_bench: RedisLock next to the raw Redis commands doing the same job,
// and redis-py's Lock and portalocker's RedisLock for scale, in one run
// against one redis-server that the program starts (loopback TCP):
//  1. uncontended Acquire+Release vs SET NX PX + a Lua compare-and-delete
//     (EVALSHA) on one open connection (target p50 <= 1.3x);
//  2. hand-off: a waiter blocked in another process, the holder releases ->
//     the waiter's Acquire() returns; vs one round trip (PING) (target p50
//     <= 3 round trips);
//  3. the commands a waiter blocked 1 s sends (INFO commandstats) and the
//     CPU it uses (target 0 commands, CPU <= 2 ms);
//  4. redis-py's Lock and portalocker's RedisLock hand-off (information;
//     skipped with the reason when they cannot run).
// Run: bazel run -c opt //tests/bench:redis_bench [-- --fail_on_miss]
// Figures: docs/performance.md, "RedisLock: redis_bench".

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "onlyone/internal/redis_connection.h"
#include "onlyone/internal/redis_endpoint.h"
#include "onlyone/redis_lock.h"
#include "tests/bench/bench_util.h"
#include "tests/redis_server.h"

namespace onlyone::bench {
namespace {

constexpr char kPython[] = "/usr/bin/python3";
int uncontended_runs = 3000;
int handoff_rounds = 300;

// The raw compare-and-delete every Redis lock recipe uses.
constexpr char kCompareAndDelete[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "return redis.call('DEL', KEYS[1]) end return 0";

std::unique_ptr<internal::RedisConnection> Connect(const std::string& url) {
  absl::StatusOr<internal::RedisEndpoint> endpoint = internal::ParseRedisUrl(url);
  if (!endpoint.ok()) Die(endpoint.status().ToString());
  absl::StatusOr<std::unique_ptr<internal::RedisConnection>> connection =
      internal::RedisConnection::Connect(*endpoint, absl::Seconds(5));
  if (!connection.ok()) Die(connection.status().ToString());
  return *std::move(connection);
}

internal::RedisReply Run(internal::RedisConnection& redis,
                         const std::vector<std::string>& argv) {
  absl::StatusOr<internal::RedisReply> reply = redis.Command(argv);
  if (!reply.ok()) Die(reply.status().ToString());
  if (reply->type == internal::RedisReply::Type::kError) Die(reply->text);
  return *std::move(reply);
}

RedisLockOptions Options(const std::string& url) {
  RedisLockOptions options;
  options.server = url;
  options.lease = absl::Seconds(30);
  return options;
}

// Waits until a client is subscribed to `name`'s release channel (set-up,
// not timed).
void WaitUntilSubscribed(internal::RedisConnection& redis,
                         const std::string& name) {
  const int64_t give_up = NowNs() + 10'000'000'000;
  for (;;) {
    internal::RedisReply reply =
        Run(redis, {"PUBSUB", "NUMSUB", "onlyone:released:" + name});
    if (reply.elements.size() == 2 && reply.elements[1].integer >= 1) return;
    if (NowNs() > give_up) Die("the waiter never subscribed");
    usleep(200);
  }
}

// Every command the server ran except INFO (ours).
int64_t CommandsRun(internal::RedisConnection& redis) {
  const std::string info = Run(redis, {"INFO", "commandstats"}).text;
  int64_t total = 0;
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    if (!absl::ConsumePrefix(&line, "cmdstat_")) continue;
    if (absl::StartsWith(line, "info:")) continue;
    const size_t calls = line.find("calls=");
    int64_t count = 0;
    if (calls == absl::string_view::npos) continue;
    const absl::string_view rest = line.substr(calls + 6);
    if (absl::SimpleAtoi(rest.substr(0, rest.find(',')), &count)) total += count;
  }
  return total;
}

std::vector<double> RoundTrips(internal::RedisConnection& redis) {
  std::vector<double> ns;
  for (int i = 0; i < uncontended_runs; ++i) {
    const int64_t start = NowNs();
    Run(redis, {"PING"});
    ns.push_back(static_cast<double>(NowNs() - start));
  }
  return ns;
}

void BenchUncontended(const std::string& url, internal::RedisConnection& redis,
                      std::vector<Row>& rows) {
  const internal::RedisScript cad(kCompareAndDelete);
  std::vector<double> ours, raw;
  for (int i = 0; i < 200; ++i) {  // warm both paths
    absl::StatusOr<RedisLock> lock = RedisLock::Acquire("uncontended", Options(url));
    if (!lock.ok() || !lock->Release().ok()) Die("warm-up");
  }
  for (int i = 0; i < uncontended_runs; ++i) {
    // Alternating, so that drifts in the machine's load hit both alike.
    int64_t start = NowNs();
    absl::StatusOr<RedisLock> lock =
        RedisLock::Acquire("uncontended", Options(url));
    if (!lock.ok()) Die(lock.status().ToString());
    if (!lock->Release().ok()) Die("release");
    ours.push_back(static_cast<double>(NowNs() - start));

    const std::string token = absl::StrCat("raw-", i);
    start = NowNs();
    if (Run(redis, {"SET", "raw-lock", token, "NX", "PX", "30000"}).type !=
        internal::RedisReply::Type::kStatus) {
      Die("raw SET NX refused");
    }
    absl::StatusOr<internal::RedisReply> deleted =
        redis.Eval(cad, {"raw-lock"}, {token});
    if (!deleted.ok() || deleted->integer != 1) Die("raw compare-and-delete");
    raw.push_back(static_cast<double>(NowNs() - start));
  }
  AddLatencyRows(rows, "uncontended Acquire+Release p50 (us)",
                 "uncontended Acquire+Release p99 (us)", ours, raw, 1.3);
}

struct HandoffShared {
  std::atomic<int64_t> acquired_ns[1000];
};

// The same hand-off with the raw commands, the floor of any pub/sub lock:
// a waiter subscribed to a channel, woken by a compare-and-delete that
// publishes, takes the lock with SET NX PX.
constexpr char kCompareDeletePublish[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then "
    "redis.call('DEL', KEYS[1]) redis.call('PUBLISH', ARGV[2], ARGV[1]) "
    "return 1 end return 0";

std::vector<double> RawHandoff(const std::string& url,
                               internal::RedisConnection& redis) {
  const internal::RedisScript release(kCompareDeletePublish);
  auto* shared = MapShared<HandoffShared>();
  Pipe go = MakePipe(), done = MakePipe();
  const pid_t waiter = ForkChild([&] {
    close(go.write_end);
    close(done.read_end);
    std::unique_ptr<internal::RedisConnection> commands = Connect(url);
    std::unique_ptr<internal::RedisConnection> subscriber = Connect(url);
    Run(*subscriber, {"SUBSCRIBE", "raw-released"});
    for (int round = 0; round < handoff_rounds; ++round) {
      ExpectByte(go.read_end, 'g', "raw hand-off waiter");
      for (;;) {
        if (Run(*commands, {"SET", "raw-handoff", "w", "NX", "PX", "30000"})
                .type == internal::RedisReply::Type::kStatus) {
          break;
        }
        absl::StatusOr<internal::RedisWaitResult> woken =
            subscriber->WaitForMessage(absl::InfiniteFuture(), -1);
        if (!woken.ok()) Die(woken.status().ToString());
      }
      shared->acquired_ns[round] = NowNs();
      Run(*commands, {"DEL", "raw-handoff"});
      WriteByte(done.write_end, 'd');
    }
    return 0;
  });
  close(go.read_end);
  close(done.write_end);
  std::vector<double> raw;
  for (int round = 0; round < handoff_rounds; ++round) {
    Run(redis, {"SET", "raw-handoff", "h", "NX", "PX", "30000"});
    WriteByte(go.write_end, 'g');
    usleep(1000);  // its first try finds the lock held
    const int64_t released = NowNs();
    absl::StatusOr<internal::RedisReply> deleted =
        redis.Eval(release, {"raw-handoff"}, {"h", "raw-released"});
    if (!deleted.ok() || deleted->integer != 1) Die("raw release");
    ExpectByte(done.read_end, 'd', "raw hand-off");
    raw.push_back(static_cast<double>(shared->acquired_ns[round] - released));
  }
  WaitChild(waiter, "raw hand-off waiter");
  close(go.write_end);
  close(done.read_end);
  UnmapShared(shared);
  return raw;
}

void BenchHandoff(const std::string& url, internal::RedisConnection& redis,
                  const std::vector<double>& round_trip, std::vector<Row>& rows) {
  auto* shared = MapShared<HandoffShared>();
  Pipe go = MakePipe(), done = MakePipe();
  const pid_t waiter = ForkChild([&] {
    close(go.write_end);
    close(done.read_end);
    for (int round = 0; round < handoff_rounds; ++round) {
      ExpectByte(go.read_end, 'g', "hand-off waiter");
      absl::StatusOr<RedisLock> lock = RedisLock::Acquire("handoff", Options(url));
      shared->acquired_ns[round] = NowNs();
      if (!lock.ok() || !lock->Release().ok()) Die("waiter's lock");
      WriteByte(done.write_end, 'd');
    }
    return 0;
  });
  close(go.read_end);
  close(done.write_end);
  std::vector<double> ours;
  for (int round = 0; round < handoff_rounds; ++round) {
    absl::StatusOr<RedisLock> lock = RedisLock::Acquire("handoff", Options(url));
    if (!lock.ok()) Die(lock.status().ToString());
    WriteByte(go.write_end, 'g');
    WaitUntilSubscribed(redis, "handoff");
    usleep(1000);  // let its try after subscribing find the lock held
    const int64_t released = NowNs();
    if (!lock->Release().ok()) Die("release");
    ExpectByte(done.read_end, 'd', "hand-off");
    ours.push_back(static_cast<double>(shared->acquired_ns[round] - released));
  }
  WaitChild(waiter, "hand-off waiter");
  close(go.write_end);
  close(done.read_end);
  UnmapShared(shared);
  const double p50 = Percentile(ours, 50), rt = Percentile(round_trip, 50);
  rows.push_back(Row{"hand-off p50 (us) vs one round trip (PING p50)",
                     absl::StrFormat("%.1f", p50 / 1e3),
                     absl::StrFormat("%.1f", rt / 1e3), Ratio(p50, rt), "<= 3",
                     Verdict(p50 <= 3 * rt)});
  rows.push_back(Row{"hand-off p99 (us) vs one round trip (PING p99)",
                     absl::StrFormat("%.1f", Percentile(ours, 99) / 1e3),
                     absl::StrFormat("%.1f", Percentile(round_trip, 99) / 1e3),
                     Ratio(Percentile(ours, 99), Percentile(round_trip, 99)),
                     "-", "-"});
  const std::vector<double> raw = RawHandoff(url, redis);
  AddLatencyRows(rows, "hand-off p50 (us) vs raw pub/sub + SET NX",
                 "hand-off p99 (us) vs raw pub/sub + SET NX", ours, raw, 0);
}

absl::Duration CpuTimeOf(pid_t pid) {
  const std::string stat = ReadWholeFile(absl::StrCat("/proc/", pid, "/stat"));
  const size_t end_of_name = stat.rfind(')');
  if (end_of_name == std::string::npos) Die("no /proc/PID/stat");
  std::vector<std::string> fields =
      absl::StrSplit(stat.substr(end_of_name + 2), ' ');
  int64_t user = 0, system = 0;
  if (fields.size() < 13 || !absl::SimpleAtoi(fields[11], &user) ||
      !absl::SimpleAtoi(fields[12], &system)) {
    Die("bad /proc/PID/stat");
  }
  return absl::Seconds(static_cast<double>(user + system) /
                       sysconf(_SC_CLK_TCK));
}

void BenchIdleWaiter(const std::string& url, internal::RedisConnection& redis,
                     std::vector<Row>& rows) {
  absl::StatusOr<RedisLock> lock = RedisLock::Acquire("idle", Options(url));
  if (!lock.ok()) Die(lock.status().ToString());
  const pid_t waiter = ForkChild([&] {
    return RedisLock::Acquire("idle", Options(url)).ok() ? 0 : 1;
  });
  WaitUntilSubscribed(redis, "idle");
  // After subscribing the waiter tries once more; count from when it sleeps
  // in poll(2) and the server has seen nothing new across that look.
  int64_t commands_before = CommandsRun(redis);
  for (const int64_t give_up = NowNs() + 10'000'000'000;;) {
    const std::string syscall =
        ReadWholeFile(absl::StrCat("/proc/", waiter, "/syscall"));
    const bool in_poll = absl::StartsWith(syscall, "7 ") ||
                         absl::StartsWith(syscall, "271 ");
    const int64_t commands_now = CommandsRun(redis);
    if (in_poll && commands_now == commands_before) break;
    commands_before = commands_now;
    if (NowNs() > give_up) Die("the waiter never went to sleep");
    usleep(1000);
  }
  const absl::Duration cpu_before = CpuTimeOf(waiter);
  usleep(1000000);  // the measured wait
  const double cpu_ms =
      absl::ToDoubleMilliseconds(CpuTimeOf(waiter) - cpu_before);
  const int64_t commands = CommandsRun(redis) - commands_before;
  if (!lock->Release().ok()) Die("release");
  WaitChild(waiter, "idle waiter");
  rows.push_back(Row{"commands sent by a waiter blocked 1 s",
                     absl::StrCat(commands), "-", "-", "0",
                     Verdict(commands == 0)});
  rows.push_back(Row{"CPU of a waiter blocked 1 s (ms, clock ticks)",
                     absl::StrFormat("%.0f", cpu_ms), "-", "-", "<= 2",
                     Verdict(cpu_ms <= 2)});
}

// Hand-offs of a Python lock: a waiter thread blocked on the lock while the
// main thread holds it and releases it at a phase spread over the waiter's
// check interval; prints one latency in ns per line.
constexpr char kPythonHandoff[] = R"(
import sys, threading, time, redis
kind, port, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def mono(): return time.clock_gettime_ns(time.CLOCK_MONOTONIC)
def connection(): return redis.Redis(host='127.0.0.1', port=port)
def make(name):
    if kind == 'redis-py':
        return connection().lock(name, timeout=30, blocking_timeout=30)
    import portalocker
    return portalocker.RedisLock(name, connection=connection(), timeout=30)
for i in range(rounds):
    name = 'py-%s-%d' % (kind, i)
    holder = make(name)
    holder.acquire()
    got = {}
    def wait():
        lock = make(name)
        lock.acquire()
        got['t'] = mono()
        lock.release()
    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3 + 0.25 * i / rounds)
    released = mono()
    holder.release()
    thread.join()
    print(got['t'] - released, flush=True)
)";

void BenchPython(const std::string& kind, int port, std::vector<Row>& rows) {
  constexpr int kRounds = 20;
  Pipe output = MakePipe();
  Pipe errors = MakePipe();
  const pid_t python = ForkChild([&] {
    dup2(output.write_end, 1);
    dup2(errors.write_end, 2);
    const std::string port_text = absl::StrCat(port);
    const std::string rounds = absl::StrCat(kRounds);
    execl(kPython, kPython, "-c", kPythonHandoff, kind.c_str(),
          port_text.c_str(), rounds.c_str(), nullptr);
    DieErrno("exec python3");
    return 127;
  });
  close(output.write_end);
  close(errors.write_end);
  std::string text, error_text;
  for (char c; (c = ReadByte(output.read_end)) != 0;) text += c;
  for (char c; (c = ReadByte(errors.read_end)) != 0;) error_text += c;
  close(output.read_end);
  close(errors.read_end);
  int status = 0;
  waitpid(python, &status, 0);
  std::vector<double> latency;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    double ns = 0;
    if (absl::SimpleAtod(line, &ns)) latency.push_back(ns);
  }
  const std::string metric = kind + " Lock hand-off p50 / max (ms)";
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
      latency.size() != kRounds) {
    std::vector<absl::string_view> lines =
        absl::StrSplit(error_text, '\n', absl::SkipEmpty());
    const std::string reason =
        lines.empty() ? "no output" : std::string(lines.back());
    std::printf("skipped %s: %s\n", kind.c_str(), reason.c_str());
    rows.push_back(Row{metric, "skipped: " + reason, "-", "-", "-", "-"});
    return;
  }
  std::sort(latency.begin(), latency.end());
  rows.push_back(Row{metric,
                     absl::StrFormat("%.1f / %.1f", Percentile(latency, 50) / 1e6,
                                     latency.back() / 1e6),
                     "-", "-", "-", "-"});
}

}  // namespace
}  // namespace onlyone::bench

int main(int argc, char** argv) {
  using namespace onlyone::bench;
  bool fail_on_miss = false;
  ParseCommandLine(argc, argv, fail_on_miss,
                   {{"--runs=", &uncontended_runs},
                    {"--handoffs=", &handoff_rounds}});
  handoff_rounds = std::min(handoff_rounds, 1000);
  std::printf("%s\nload average at start: %s", MachineSummary().c_str(),
              LoadAverage().c_str());
  absl::StatusOr<std::unique_ptr<onlyone::testing::RedisServer>> server =
      onlyone::testing::RedisServer::Start();
  if (!server.ok()) Die(server.status().ToString());
  const std::string url = (*server)->tcp_url();
  std::printf("server: redis-server on %s\n", url.c_str());
  std::unique_ptr<onlyone::internal::RedisConnection> redis = Connect(url);
  std::vector<Row> rows;
  const std::vector<double> round_trip = RoundTrips(*redis);
  rows.push_back(Row{"one round trip (PING) p50 (us)",
                     absl::StrFormat("%.1f", Percentile(round_trip, 50) / 1e3),
                     "-", "-", "-", "-"});
  BenchUncontended(url, *redis, rows);
  BenchHandoff(url, *redis, round_trip, rows);
  BenchIdleWaiter(url, *redis, rows);
  BenchPython("redis-py", (*server)->port(), rows);
  BenchPython("portalocker", (*server)->port(), rows);
  PrintTable("RedisLock (loopback TCP)", rows);
  std::printf("load average at end: %s", LoadAverage().c_str());
  return fail_on_miss && CountMisses(rows) > 0 ? 1 : 0;
}
