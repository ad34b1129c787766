// The onlyone command's --redis mode end to end: the built binary as real
// processes against a redis-server the test starts (tests/redis_server.h):
// exclusion and its refusal, the fencing token in COMMAND's environment,
// --wait, status, list and wait, a lost lease stopping COMMAND (exit 69),
// passwords never printed, bad URLs and unreachable servers.
//
// Synchronisation: COMMAND writes "s", its token and "." to descriptor 8 (a
// pipe the test reads) once it runs, and blocks reading descriptor 9 (a pipe
// whose write end the test holds). That a waiter is blocked is the server's
// own count of subscribers to the lock's release channel. No sleeps.

#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/exit_codes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cli_test_util.h"
#include "tests/redis_server.h"
#include "tests/test_util.h"

namespace onlyone::cli {
namespace {

using ::nlohmann::json;
using ::onlyone::testing::Pipe;
using ::onlyone::testing::Process;
using ::onlyone::testing::RedisServer;
using ::onlyone::testing::Result;
using ::onlyone::testing::RunOnlyone;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;

// Says "s", the token and "." on 8 once running; runs until 9 is closed.
constexpr char kHold[] =
    "printf 's%s.' \"$ONLYONE_FENCING_TOKEN\" >&8; exec cat <&9";
// The same, and on SIGTERM says "T" on 8 and exits 0.
constexpr char kHoldUntilTerm[] =
    "trap 'printf T >&8; exit 0' TERM; "
    "printf 's%s.' \"$ONLYONE_FENCING_TOKEN\" >&8; cat <&9 & wait";

// How long a prompt reaction may take on a loaded machine.
constexpr absl::Duration kPrompt = absl::Seconds(3);

std::string HostName() {
  char host[256] = {};
  EXPECT_EQ(gethostname(host, sizeof host - 1), 0);
  return host;
}

// `onlyone run ... -- sh -c SCRIPT` holding the lock, with its pipes.
struct Holder {
  Pipe ready;
  Pipe release;
  std::unique_ptr<Process> process;
  uint64_t token = 0;

  // Reads "s" TOKEN "." from COMMAND; false if it did not start.
  bool ReadStart() {
    if (ready.Receive() != 's') return false;
    std::string digits;
    for (char c = ready.Receive(); c >= '0' && c <= '9'; c = ready.Receive()) {
      digits += c;
    }
    return absl::SimpleAtoi(digits, &token);
  }
  // Ends COMMAND; onlyone's exit code.
  int Finish() {
    release.CloseWrite();
    return process->Wait();
  }
};

class CliRedisTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(RedisServer::Options()); }

  void StartServer(const RedisServer::Options& options) {
    absl::StatusOr<std::unique_ptr<RedisServer>> server =
        RedisServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    url_ = server_->unix_url();
  }

  // Starts `onlyone run --redis URL --name NAME FLAGS -- sh -c SCRIPT`,
  // without waiting for COMMAND.
  std::unique_ptr<Holder> Start(const std::string& name,
                                const std::vector<std::string>& flags = {},
                                const char* script = kHold,
                                const std::string& url = "",
                                const std::vector<std::string>& env = {}) {
    auto holder = std::make_unique<Holder>();
    std::vector<std::string> args = {"run", "--redis",
                                     url.empty() ? url_ : url, "--name", name};
    args.insert(args.end(), flags.begin(), flags.end());
    args.insert(args.end(), {"--", "sh", "-c", script});
    holder->process = Process::StartOnlyone(
        args, {{8, holder->ready.write_fd()}, {9, holder->release.read_fd()}},
        env);
    holder->ready.CloseWrite();
    holder->release.CloseRead();
    return holder;
  }

  // Start(), then waits until COMMAND runs holding the lock.
  std::unique_ptr<Holder> Hold(const std::string& name,
                               const std::vector<std::string>& flags = {},
                               const char* script = kHold) {
    std::unique_ptr<Holder> holder = Start(name, flags, script);
    EXPECT_TRUE(holder->ReadStart()) << holder->process->err();
    return holder;
  }

  // Waits until `subscribers` clients wait for `name`'s release (the
  // server's count): how the test knows a waiter is blocked.
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

  std::unique_ptr<RedisServer> server_;
  std::string url_;
};

TEST_F(CliRedisTest, ASecondRunIsRefusedNamingTheHolderUntilTheFirstEnds) {
  std::unique_ptr<Holder> first = Hold("nightly");
  ASSERT_GT(first->token, 0u);

  const Result second =
      RunOnlyone({"run", "--redis", url_, "--name", "nightly", "--", "true"});
  EXPECT_EQ(second.code, kExitConflict) << second.err;
  EXPECT_THAT(second.err, HasSubstr("'nightly'"));
  EXPECT_THAT(second.err, HasSubstr(absl::StrCat("pid ", first->process->pid(),
                                                 " on host ", HostName())));
  EXPECT_THAT(second.err, HasSubstr("(command: sh -c "));
  EXPECT_THAT(second.err, HasSubstr(absl::StrCat("fencing token ",
                                                 first->token)));
  const Result custom = RunOnlyone({"run", "--redis", url_, "--name",
                                    "nightly", "--conflict-exit-code", "3",
                                    "--", "true"});
  EXPECT_EQ(custom.code, 3) << custom.err;

  EXPECT_EQ(first->Finish(), 0) << first->process->err();
  // Released when COMMAND ended, not when the lease (30 s) runs out.
  const Result third =
      RunOnlyone({"run", "--redis", url_, "--name", "nightly", "--", "true"});
  EXPECT_EQ(third.code, 0) << third.err;
}

TEST_F(CliRedisTest, CommandGetsTheFencingTokenWhichIncreasesFromRunToRun) {
  uint64_t previous = 0;
  for (int run = 0; run < 3; ++run) {
    const Result result =
        RunOnlyone({"run", "--redis", url_, "--name", "tokens", "--", "sh",
                    "-c", "echo \"$ONLYONE_FENCING_TOKEN\"; exit 7"});
    EXPECT_EQ(result.code, 7) << result.err;  // COMMAND's own status
    uint64_t token = 0;
    ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(result.out), &token))
        << result.out;
    EXPECT_GT(token, previous);
    previous = token;
  }
}

TEST_F(CliRedisTest, AWaitingRunIsAdmittedWhenTheHolderReleases) {
  std::unique_ptr<Holder> first = Hold("queue");
  std::unique_ptr<Holder> second = Start("queue", {"--wait", "60s"});
  ASSERT_TRUE(WaitForSubscribers("queue", 1)) << second->process->err();

  const absl::Time released = absl::Now();
  EXPECT_EQ(first->Finish(), 0);
  ASSERT_TRUE(second->ReadStart()) << second->process->err();
  EXPECT_LT(absl::Now() - released, kPrompt) << "woken by the release";
  EXPECT_GT(second->token, first->token);
  EXPECT_EQ(second->Finish(), 0) << second->process->err();

  // A wait that runs out is a conflict naming the holder.
  std::unique_ptr<Holder> third = Hold("queue");
  const Result timed_out = RunOnlyone({"run", "--redis", url_, "--name",
                                       "queue", "--wait", "100ms", "--",
                                       "true"});
  EXPECT_EQ(timed_out.code, kExitConflict) << timed_out.err;
  EXPECT_THAT(timed_out.err,
              HasSubstr(absl::StrCat("pid ", third->process->pid())));
  EXPECT_EQ(third->Finish(), 0);
}

TEST_F(CliRedisTest, StatusNamesTheHolderInTextAndJson) {
  std::unique_ptr<Holder> holder = Hold("report", {"--lease", "20s"});

  const Result text =
      RunOnlyone({"status", "--redis", url_, "--name", "report"});
  EXPECT_EQ(text.code, kExitOk) << text.err;
  EXPECT_THAT(text.out, HasSubstr("state:    held\n"));
  EXPECT_THAT(text.out, HasSubstr(absl::StrCat("host:     ", HostName())));
  EXPECT_THAT(text.out,
              HasSubstr(absl::StrCat("pid:      ", holder->process->pid())));
  EXPECT_THAT(text.out, HasSubstr("command:  sh -c "));
  EXPECT_THAT(text.out, HasSubstr(absl::StrCat("token:    ", holder->token)));
  EXPECT_THAT(text.out, HasSubstr("ttl:      "));
  EXPECT_THAT(text.out, HasSubstr("since:    "));

  const Result as_json =
      RunOnlyone({"status", "--redis", url_, "--name", "report", "--json"});
  EXPECT_EQ(as_json.code, kExitOk) << as_json.err;
  const json status = json::parse(as_json.out);
  EXPECT_EQ(status["name"], "report");
  EXPECT_EQ(status["held"], true);
  const json& who = status["holder"];
  EXPECT_EQ(who["host"], HostName());
  EXPECT_EQ(who["pid"], holder->process->pid());
  EXPECT_EQ(who["fencing_token"], holder->token);
  EXPECT_THAT(who["command"].get<std::string>(), HasSubstr("sh -c "));
  EXPECT_TRUE(who["since"].is_string());
  EXPECT_GT(who["lease_left_ms"].get<int64_t>(), 0);
  EXPECT_LE(who["lease_left_ms"].get<int64_t>(), 20000);

  EXPECT_EQ(holder->Finish(), 0);
  const Result free_text =
      RunOnlyone({"status", "--redis", url_, "--name", "report"});
  EXPECT_EQ(free_text.code, kExitFree) << free_text.err;
  EXPECT_THAT(free_text.out, HasSubstr("state:  free"));
  const Result free_json =
      RunOnlyone({"status", "--redis", url_, "--name", "report", "--json"});
  EXPECT_EQ(free_json.code, kExitFree) << free_json.err;
  const json free_status = json::parse(free_json.out);
  EXPECT_EQ(free_status["held"], false);
  EXPECT_TRUE(free_status["holder"].is_null());
}

TEST_F(CliRedisTest, ListShowsTheHeldNames) {
  std::unique_ptr<Holder> alpha = Hold("alpha");
  std::unique_ptr<Holder> beta = Hold("beta");

  const Result text = RunOnlyone({"list", "--redis", url_});
  EXPECT_EQ(text.code, kExitOk) << text.err;
  EXPECT_THAT(text.out, HasSubstr("NAME"));
  // Columns: NAME HOST PID SINCE TOKEN TTL COMMAND.
  EXPECT_THAT(text.out, ContainsRegex(absl::StrCat(
                            "\nalpha +", HostName(), " +",
                            alpha->process->pid(), " .* ", alpha->token, " ")));
  EXPECT_THAT(text.out, ContainsRegex(absl::StrCat(
                            "\nbeta +", HostName(), " +",
                            beta->process->pid(), " .* ", beta->token, " ")));

  const Result as_json = RunOnlyone({"list", "--redis", url_, "--json"});
  EXPECT_EQ(as_json.code, kExitOk) << as_json.err;
  const json listed = json::parse(as_json.out);
  ASSERT_EQ(listed["locks"].size(), 2u) << as_json.out;
  EXPECT_EQ(listed["locks"][0]["name"], "alpha");
  EXPECT_EQ(listed["locks"][0]["holder"]["fencing_token"], alpha->token);
  EXPECT_EQ(listed["locks"][1]["name"], "beta");
  EXPECT_EQ(listed["locks"][1]["holder"]["pid"], beta->process->pid());

  EXPECT_EQ(alpha->Finish(), 0);
  EXPECT_EQ(beta->Finish(), 0);
  const Result empty = RunOnlyone({"list", "--redis", url_});
  EXPECT_EQ(empty.code, kExitOk) << empty.err;
  EXPECT_EQ(empty.out, "no locks held on the server\n");
}

TEST_F(CliRedisTest, WaitReturnsWhenTheLockIsReleased) {
  const Result free =
      RunOnlyone({"wait", "--redis", url_, "--name", "deploy"});
  EXPECT_EQ(free.code, kExitOk) << free.err;

  std::unique_ptr<Holder> holder = Hold("deploy");
  const Result timed_out = RunOnlyone(
      {"wait", "--redis", url_, "--name", "deploy", "--timeout", "100ms"});
  EXPECT_EQ(timed_out.code, kExitConflict) << timed_out.err;
  EXPECT_THAT(timed_out.err,
              HasSubstr(absl::StrCat("pid ", holder->process->pid())));

  std::unique_ptr<Process> waiter = Process::StartOnlyone(
      {"wait", "--redis", url_, "--name", "deploy"});
  ASSERT_TRUE(WaitForSubscribers("deploy", 1)) << waiter->err();
  EXPECT_EQ(holder->Finish(), 0);
  EXPECT_EQ(waiter->Wait(), kExitOk) << waiter->err();
  const Result after =
      RunOnlyone({"status", "--redis", url_, "--name", "deploy"});
  EXPECT_EQ(after.code, kExitFree) << "wait left the lock held: " << after.out;
}

TEST_F(CliRedisTest, AServerThatGoesAwayStopsCommandAndExitsLockLost) {
  std::unique_ptr<Holder> holder =
      Hold("fragile", {"--lease", "600ms"}, kHoldUntilTerm);
  const absl::Time killed = absl::Now();
  server_->Kill();
  EXPECT_EQ(holder->ready.Receive(), 'T') << "COMMAND got no SIGTERM";
  EXPECT_LT(absl::Now() - killed, absl::Milliseconds(600) + kPrompt);
  EXPECT_EQ(holder->process->Wait(), kExitLockLost);
  EXPECT_THAT(holder->process->err(), HasSubstr("fragile"));
  EXPECT_THAT(holder->process->err(), HasSubstr("lost"));
}

TEST_F(CliRedisTest, AStoppedSupervisorLosesTheLeaseToTheNextHolder) {
  std::unique_ptr<Holder> stopped =
      Hold("paused", {"--lease", "500ms"}, kHoldUntilTerm);
  ASSERT_EQ(kill(stopped->process->pid(), SIGSTOP), 0);
  // The next holder gets it when the stopped one's lease ends.
  std::unique_ptr<Holder> next = Start("paused", {"--wait", "60s"});
  ASSERT_TRUE(next->ReadStart()) << next->process->err();
  EXPECT_GT(next->token, stopped->token);

  ASSERT_EQ(kill(stopped->process->pid(), SIGCONT), 0);
  EXPECT_EQ(stopped->ready.Receive(), 'T') << "COMMAND got no SIGTERM";
  EXPECT_EQ(stopped->process->Wait(), kExitLockLost)
      << stopped->process->err();
  // Its release left the new holder's lock alone.
  const Result status =
      RunOnlyone({"status", "--redis", url_, "--name", "paused", "--json"});
  EXPECT_EQ(status.code, kExitOk) << status.err;
  EXPECT_EQ(json::parse(status.out)["holder"]["pid"], next->process->pid());
  EXPECT_EQ(next->Finish(), 0) << next->process->err();
}

TEST_F(CliRedisTest, APasswordIsNeverPrinted) {
  const std::string secret = "pw-Secret-4711";
  StartServer({secret});
  const std::string with_password =
      absl::StrCat("redis://:", secret, "@127.0.0.1:", server_->port());
  std::unique_ptr<Holder> holder =
      Start("guarded", {"--verbose"}, kHold, with_password);
  ASSERT_TRUE(holder->ReadStart()) << holder->process->err();

  std::vector<Result> results;
  results.push_back(RunOnlyone({"run", "--redis", with_password, "--name",
                                "guarded", "--verbose", "--", "true"}));
  EXPECT_EQ(results.back().code, kExitConflict) << results.back().err;
  results.push_back(RunOnlyone(
      {"status", "--redis", with_password, "--name", "guarded"}));
  EXPECT_EQ(results.back().code, kExitOk) << results.back().err;
  results.push_back(RunOnlyone(
      {"status", "--redis", with_password, "--name", "guarded", "--json"}));
  EXPECT_EQ(results.back().code, kExitOk) << results.back().err;
  results.push_back(RunOnlyone({"list", "--redis", with_password}));
  EXPECT_EQ(results.back().code, kExitOk) << results.back().err;
  results.push_back(RunOnlyone({"list", "--redis", with_password, "--json"}));
  EXPECT_EQ(results.back().code, kExitOk) << results.back().err;
  results.push_back(RunOnlyone({"wait", "--redis", with_password, "--name",
                                "guarded", "--timeout", "50ms"}));
  EXPECT_EQ(results.back().code, kExitConflict) << results.back().err;
  // A wrong one is refused (a system error, 71), and not printed either.
  const std::string wrong = "pw-Wrong-0815";
  results.push_back(RunOnlyone(
      {"status", "--redis",
       absl::StrCat("redis://:", wrong, "@127.0.0.1:", server_->port()),
       "--name", "guarded"}));
  EXPECT_EQ(results.back().code, kExitOsError) << results.back().err;
  EXPECT_THAT(results.back().err, Not(HasSubstr(wrong)));
  for (const Result& result : results) {
    EXPECT_THAT(result.out, Not(HasSubstr(secret)));
    EXPECT_THAT(result.err, Not(HasSubstr(secret)));
  }

  // Off the command line: from a file, or from the environment.
  const std::string file = absl::StrCat(::testing::TempDir(), "/redis-pw");
  std::ofstream(file) << secret << "\n";
  const std::string bare = server_->tcp_url();
  const Result from_file =
      RunOnlyone({"status", "--redis", bare, "--redis-password-file", file,
                  "--name", "guarded"});
  EXPECT_EQ(from_file.code, kExitOk) << from_file.err;
  const Result from_env =
      RunOnlyone({"list", "--redis", bare}, {},
                 {absl::StrCat("ONLYONE_REDIS_PASSWORD=", secret)});
  EXPECT_EQ(from_env.code, kExitOk) << from_env.err;
  EXPECT_THAT(from_env.out, HasSubstr("guarded"));
  const Result without = RunOnlyone({"list", "--redis", bare});
  EXPECT_EQ(without.code, kExitOsError) << without.err;
  EXPECT_EQ(unlink(file.c_str()), 0);

  EXPECT_EQ(holder->Finish(), 0);
  EXPECT_THAT(holder->process->err(), Not(HasSubstr(secret)));
}

TEST_F(CliRedisTest, BadUrlsAndFlagsAreUsageErrors) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"run", "--redis", "http://127.0.0.1:6379", "--name", "x", "--",
            "true"},
           {"status", "--redis", "redis://127.0.0.1:notaport", "--name", "x"},
           {"list", "--redis", "redis://"},
           {"wait", "--redis", "unix://", "--name", "x"},
           {"status", "--redis", url_},  // no --name
           {"run", "--redis", url_, "--name", "x", "--lock", "/tmp/x", "--",
            "true"},
           {"run", "--redis", url_, "--name", "x", "--scope", "machine", "--",
            "true"},
           {"run", "--redis", url_, "--name", "x", "--slots", "2", "--",
            "true"},
           {"run", "--redis", url_, "--name", "x", "--shared", "--", "true"},
           {"run", "--redis", url_, "--name", "x", "--on-conflict", "replace",
            "--", "true"},
           {"run", "--redis", url_, "--name", "x", "--lease", "10ms", "--",
            "true"},
           {"run", "--name", "x", "--lease", "10s", "--", "true"},
           {"list", "--redis-password-file", "/nonexistent"},
       }) {
    const Result result = RunOnlyone(args);
    EXPECT_EQ(result.code, kExitUsage)
        << absl::StrJoin(args, " ") << ": " << result.err;
    EXPECT_THAT(result.err, HasSubstr("onlyone")) << absl::StrJoin(args, " ");
  }
  const Result bad = RunOnlyone({"run", "--redis", "http://127.0.0.1:6379",
                                 "--name", "x", "--", "true"});
  EXPECT_THAT(bad.err, HasSubstr("http://127.0.0.1:6379"));
}

TEST_F(CliRedisTest, AnUnreachableServerIsAnErrorNamingItWithinTheTimeout) {
  const std::string gone = server_->tcp_url();
  const std::string gone_socket = server_->unix_url();
  server_->Kill();
  for (const std::string& url : {gone, gone_socket}) {
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{
             {"run", "--redis", url, "--name", "x", "--", "true"},
             {"run", "--redis", url, "--name", "x", "--wait", "1m", "--",
              "true"},
             {"status", "--redis", url, "--name", "x"},
             {"list", "--redis", url},
             {"wait", "--redis", url, "--name", "x"},
         }) {
      const absl::Time start = absl::Now();
      const Result result = RunOnlyone(args);
      // Not the conflict code: nobody was found holding it.
      EXPECT_EQ(result.code, kExitOsError)
          << absl::StrJoin(args, " ") << ": " << result.err;
      EXPECT_THAT(result.err,
                  HasSubstr(absl::StripPrefix(absl::StripPrefix(url, "redis://"),
                                              "unix://")))
          << absl::StrJoin(args, " ");
      EXPECT_LT(absl::Now() - start, absl::Seconds(5) + kPrompt)
          << absl::StrJoin(args, " ");
    }
  }
}

}  // namespace
}  // namespace onlyone::cli
