// Tests of SingleInstance messaging with real processes: round trips in
// callback and pollable mode, size limits, timeouts against primaries that
// hang or die, stale sockets, long socket paths and peers of another user.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lib/scoped_file_lock.h"
#include "lib/single_instance.h"
#include "tests/single_instance_test_util.h"
#include "tests/test_util.h"

namespace onlyone {
namespace {

using ::onlyone::testing::BecomeNobody;
using ::onlyone::testing::Child;
using ::onlyone::testing::HoldInstanceInChild;
using ::onlyone::testing::InstanceDirectoryTest;
using ::onlyone::testing::kNobodyUid;
using ::onlyone::testing::MakeTempDir;
using ::onlyone::testing::Pipe;
using ::testing::HasSubstr;

void WriteText(int fd, const std::string& text) {
  ASSERT_EQ(write(fd, text.data(), text.size()),
            static_cast<ssize_t>(text.size()));
}

// Describes a received message in one line, for a child to report it.
std::string Describe(const InstanceMessage& message) {
  return absl::StrCat(absl::StrJoin(message.arguments, ","), "|",
                      message.working_directory, "|", message.payload, "|",
                      message.sender_pid, "|", message.sender_uid);
}

// A sender's view of a reply: the reply itself, or the error's code and
// message.
std::string ReplyOrError(const absl::StatusOr<std::string>& reply) {
  return reply.ok()
             ? *reply
             : absl::StrCat(absl::StatusCodeToString(reply.status().code()),
                            ": ", reply.status().message());
}

InstanceMessage MakeMessage(std::string payload) {
  InstanceMessage message;
  message.arguments = {"editor", "--new-window", "file with spaces.txt"};
  message.working_directory = "/home/someone/project";
  message.payload = std::move(payload);
  return message;
}

// Binds a unix socket at `path` (short enough for sun_path) and listens.
int ListenRaw(const std::string& path, int backlog) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  if (bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(fd, backlog) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

class MessagingTest : public InstanceDirectoryTest {
 protected:
  // /tmp keeps socket paths short and reachable by `nobody`.
  MessagingTest() : InstanceDirectoryTest(Reach::kOtherUsers) {}
};

TEST_F(MessagingTest, RoundTripToAPrimaryInAnotherProcess) {
  Pipe ready, report, quit;
  InstanceOptions listening = options_;
  listening.listen = true;
  listening.on_message = [&](const InstanceMessage& message) {
    const std::string line = Describe(message) + "\n";
    WriteText(report.write_fd(), line);
    return "opened " + message.arguments.back();
  };
  Child primary = HoldInstanceInChild("editor", listening, ready, quit);
  ASSERT_EQ(ready.Receive(), '.');

  // A second copy is refused, then hands over its command line.
  EXPECT_TRUE(absl::IsUnavailable(
      SingleInstance::Acquire("editor", options_).status()));
  absl::StatusOr<std::string> reply =
      SingleInstance::Send("editor", MakeMessage("\x01\x02 binary"), options_);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "opened file with spaces.txt");

  // The primary saw everything, with the sender's identity from the kernel.
  std::string line;
  for (char c = report.Receive(); c != '\n' && c != '\0';
       c = report.Receive()) {
    line.push_back(c);
  }
  EXPECT_EQ(line, absl::StrCat("editor,--new-window,file with spaces.txt|"
                               "/home/someone/project|\x01\x02 binary|",
                               getpid(), "|", geteuid()));
  // Several in a row.
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(SingleInstance::Send("editor", MakeMessage(""), options_).ok());
  }
  quit.Send();
  EXPECT_EQ(primary.Wait(), 0);
  // A released primary removed its socket.
  EXPECT_NE(access(SocketOf("editor").c_str(), F_OK), 0);
  absl::StatusOr<std::string> none =
      SingleInstance::Send("editor", MakeMessage(""), options_);
  EXPECT_TRUE(absl::IsUnavailable(none.status())) << none.status();
  EXPECT_THAT(std::string(none.status().message()),
              HasSubstr("no running copy of editor"));
}

TEST_F(MessagingTest, PollableModeDeliversThroughMessageFd) {
  Pipe go, result;
  // The sender is forked before the primary starts its thread.
  Child sender = Child::Fork([&] {
    if (go.Receive() != '.') return 2;
    absl::StatusOr<std::string> first =
        SingleInstance::Send("poller", MakeMessage("one"), options_);
    absl::StatusOr<std::string> second =
        SingleInstance::Send("poller", MakeMessage("two"), options_);
    const std::string text = absl::StrCat(
        first.ok() ? *first : std::string(first.status().message()), "/",
        second.ok() ? *second : std::string(second.status().message()));
    WriteText(result.write_fd(), text);
    return 0;
  });
  result.CloseWrite();
  InstanceOptions listening = options_;
  listening.listen = true;
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("poller", listening);
  ASSERT_TRUE(instance.ok()) << instance.status();
  ASSERT_GE(instance->message_fd(), 0);
  absl::StatusOr<std::optional<InstanceMessage>> none = instance->TakeMessage();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_TRUE(absl::IsFailedPrecondition(instance->Reply("nothing taken")));
  go.Send();

  std::vector<std::string> payloads;
  while (payloads.size() < 2) {
    struct pollfd readable = {instance->message_fd(), POLLIN, 0};
    ASSERT_EQ(poll(&readable, 1, 10000), 1);
    absl::StatusOr<std::optional<InstanceMessage>> message =
        instance->TakeMessage();
    ASSERT_TRUE(message.ok() && message->has_value());
    EXPECT_EQ((*message)->sender_pid, sender.pid());
    payloads.push_back((*message)->payload);
    // The first gets an explicit reply, the second none: it is answered
    // with an empty reply at the next TakeMessage().
    if (payloads.size() == 1) {
      ASSERT_TRUE(instance->Reply("got " + payloads.back()).ok());
    }
  }
  EXPECT_THAT(payloads, ::testing::ElementsAre("one", "two"));
  absl::StatusOr<std::optional<InstanceMessage>> after =
      instance->TakeMessage();
  ASSERT_TRUE(after.ok());
  EXPECT_FALSE(after->has_value());
  EXPECT_EQ(sender.Wait(), 0);
  EXPECT_EQ(result.ReadAll(), "got one/");
}

TEST_F(MessagingTest, AReplyGivenRightBeforeReleaseIsDelivered) {
  Pipe go, result;
  Child sender = Child::Fork([&] {
    std::vector<std::string> outcomes;
    for (int i = 0; i < 2; ++i) {
      if (go.Receive() != '.') return 2;
      outcomes.push_back(ReplyOrError(
          SingleInstance::Send("quitting", MakeMessage("--quit"), options_)));
    }
    WriteText(result.write_fd(), absl::StrJoin(outcomes, "\n"));
    return 0;
  });
  result.CloseWrite();
  InstanceOptions listening = options_;
  listening.listen = true;
  for (const bool reply : {true, false}) {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("quitting", listening);
    ASSERT_TRUE(instance.ok()) << instance.status();
    go.Send();
    struct pollfd readable = {instance->message_fd(), POLLIN, 0};
    ASSERT_EQ(poll(&readable, 1, 10000), 1);
    absl::StatusOr<std::optional<InstanceMessage>> message =
        instance->TakeMessage();
    ASSERT_TRUE(message.ok() && message->has_value());
    // Replied (or not) and released at once, as a program that exits.
    if (reply) {
      ASSERT_TRUE(instance->Reply("bye").ok());
    }
    ASSERT_TRUE(instance->Release().ok());
  }
  EXPECT_EQ(sender.Wait(), 0);
  const std::vector<std::string> outcomes =
      absl::StrSplit(result.ReadAll(), '\n');
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_EQ(outcomes[0], "bye");
  EXPECT_THAT(outcomes[1], HasSubstr("UNAVAILABLE"));
  EXPECT_THAT(outcomes[1], HasSubstr("is shutting down"));
}

TEST_F(MessagingTest, CallbackModeHasNoMessageFd) {
  InstanceOptions listening = options_;
  listening.listen = true;
  listening.on_message = [](const InstanceMessage&) { return std::string(); };
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("cb", listening);
  ASSERT_TRUE(instance.ok());
  EXPECT_EQ(instance->message_fd(), -1);
  EXPECT_TRUE(absl::IsFailedPrecondition(instance->TakeMessage().status()));
  absl::StatusOr<SingleInstance> quiet =
      SingleInstance::Acquire("quiet", options_);
  ASSERT_TRUE(quiet.ok());
  EXPECT_EQ(quiet->message_fd(), -1);
  // Not listening: a sender is told so.
  absl::StatusOr<std::string> reply =
      SingleInstance::Send("quiet", MakeMessage(""), options_);
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
}

TEST_F(MessagingTest, MessagesAreBoundedBySize) {
  Pipe go;
  Child sender = Child::Fork([&] {
    if (go.Receive() != '.') return 2;
    // Too large for the primary's limit: refused by the primary.
    absl::StatusOr<std::string> big = SingleInstance::Send(
        "small", MakeMessage(std::string(8000, 'x')), options_);
    if (!absl::IsResourceExhausted(big.status())) return 3;
    if (big.status().message().find("1024") == absl::string_view::npos)
      return 4;
    // Too large for the sender's own limit: never sent.
    InstanceOptions tight = options_;
    tight.max_message_bytes = 100;
    absl::StatusOr<std::string> local = SingleInstance::Send(
        "small", MakeMessage(std::string(200, 'y')), tight);
    if (!absl::IsInvalidArgument(local.status())) return 5;
    // Within the limit: fine.
    absl::StatusOr<std::string> fits = SingleInstance::Send(
        "small", MakeMessage(std::string(500, 'z')), options_);
    return fits.ok() && *fits == "500" ? 0 : 6;
  });
  InstanceOptions listening = options_;
  listening.listen = true;
  listening.max_message_bytes = 1024;
  listening.on_message = [](const InstanceMessage& message) {
    return absl::StrCat(message.payload.size());
  };
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("small", listening);
  ASSERT_TRUE(instance.ok());
  go.Send();
  EXPECT_EQ(sender.Wait(), 0);
}

TEST_F(MessagingTest, APrimaryThatNeverAnswersGivesDeadlineExceeded) {
  Pipe go, result;
  Child sender = Child::Fork([&] {
    if (go.Receive() != '.') return 2;
    InstanceOptions quick = options_;
    quick.message_timeout = absl::Milliseconds(200);
    absl::StatusOr<std::string> reply =
        SingleInstance::Send("mute", MakeMessage("hello?"), quick);
    const std::string text(reply.status().message());
    WriteText(result.write_fd(), text);
    return absl::IsDeadlineExceeded(reply.status()) ? 0 : 1;
  });
  result.CloseWrite();
  // Pollable mode, and the application never takes the message.
  InstanceOptions listening = options_;
  listening.listen = true;
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("mute", listening);
  ASSERT_TRUE(instance.ok());
  go.Send();
  EXPECT_EQ(sender.Wait(), 0);
  EXPECT_THAT(result.ReadAll(), HasSubstr("running copy of mute"));
  // The abandoned message was dropped, not delivered late.
  absl::StatusOr<std::optional<InstanceMessage>> late = instance->TakeMessage();
  ASSERT_TRUE(late.ok());
  EXPECT_FALSE(late->has_value());
}

TEST_F(MessagingTest, AHungPrimaryThatAcceptsButNeverReadsTimesOut) {
  // A fake primary: holds the lock and a socket, accepts one connection and
  // never answers. Its backlog of 0 holds one pending connection, so once a
  // second sender is pending a third cannot even connect.
  Pipe ready, quit;
  Child primary = Child::Fork([&] {
    absl::StatusOr<ScopedFileLock> lock =
        ScopedFileLock::Acquire(absl::StrCat(dir_, "/hung.lock"));
    if (!lock.ok()) return 2;
    const int fd = ListenRaw(SocketOf("hung"), 0);
    if (fd < 0) return 3;
    ready.Send();
    const int accepted = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    quit.Receive(absl::Hours(1));
    close(accepted);
    return 0;
  });
  ASSERT_EQ(ready.Receive(), '.');
  InstanceOptions quick = options_;
  quick.message_timeout = absl::Milliseconds(300);
  // Accepted, never answered.
  absl::StatusOr<std::string> first =
      SingleInstance::Send("hung", MakeMessage("a"), quick);
  EXPECT_TRUE(absl::IsDeadlineExceeded(first.status())) << first.status();
  EXPECT_THAT(std::string(first.status().message()),
              HasSubstr("running copy of hung (pid "));
  EXPECT_THAT(std::string(first.status().message()),
              HasSubstr("did not answer within 300ms"));
  // Connected (pending in the backlog), never answered.
  absl::StatusOr<std::string> pending =
      SingleInstance::Send("hung", MakeMessage("b"), quick);
  EXPECT_TRUE(absl::IsDeadlineExceeded(pending.status())) << pending.status();
  // The backlog is full: connect(2) itself waits, bounded by the timeout.
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> blocked =
      SingleInstance::Send("hung", MakeMessage("c"), quick);
  EXPECT_TRUE(absl::IsDeadlineExceeded(blocked.status())) << blocked.status();
  EXPECT_THAT(std::string(blocked.status().message()),
              HasSubstr("did not accept the connection within 300ms"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "bounded, never a hang";
  quit.Send();
  EXPECT_EQ(primary.Wait(), 0);
}

TEST_F(MessagingTest, APrimaryThatDiesMidMessageGivesUnavailable) {
  Pipe ready;
  Child primary = Child::Fork([&] {
    InstanceOptions listening = options_;
    listening.listen = true;
    listening.on_message = [](const InstanceMessage&) -> std::string {
      _exit(9);  // crashes while handling
    };
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire("fragile", listening);
    if (!instance.ok()) return 2;
    ready.Send();
    pause();
    return 0;
  });
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<std::string> reply =
      SingleInstance::Send("fragile", MakeMessage("boom"), options_);
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  EXPECT_THAT(std::string(reply.status().message()),
              HasSubstr("closed the connection before answering"));
  EXPECT_EQ(primary.Wait(), 9);
  // Its stale socket is refused quickly, then replaced by the next primary.
  reply = SingleInstance::Send("fragile", MakeMessage(""), options_);
  EXPECT_TRUE(absl::IsUnavailable(reply.status())) << reply.status();
  InstanceOptions listening = options_;
  listening.listen = true;
  listening.on_message = [](const InstanceMessage&) {
    return std::string("ok");
  };
  absl::StatusOr<SingleInstance> next =
      SingleInstance::Acquire("fragile", listening);
  ASSERT_TRUE(next.ok()) << next.status();
  Child sender = Child::Fork([&] {
    absl::StatusOr<std::string> ok =
        SingleInstance::Send("fragile", MakeMessage(""), options_);
    return ok.ok() && *ok == "ok" ? 0 : 1;
  });
  EXPECT_EQ(sender.Wait(), 0);
}

TEST_F(MessagingTest, PeersOfAnotherUserAreRefusedUnlessAccepted) {
  ASSERT_EQ(chmod(dir_.c_str(), 01777), 0);  // a shared directory
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  Pipe go, result;
  Child nobody = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    std::vector<std::string> outcomes;
    for (const char* name : {"strict", "welcoming"}) {
      if (go.Receive() != '.') return 2;
      outcomes.push_back(ReplyOrError(
          SingleInstance::Send(name, MakeMessage("from nobody"), options_)));
    }
    const std::string text = absl::StrJoin(outcomes, "\n");
    WriteText(result.write_fd(), text);
    return 0;
  });
  result.CloseWrite();
  InstanceOptions strict = options_;
  strict.listen = true;
  strict.on_message = [](const InstanceMessage&) { return std::string("no!"); };
  absl::StatusOr<SingleInstance> strict_primary =
      SingleInstance::Acquire("strict", strict);
  ASSERT_TRUE(strict_primary.ok()) << strict_primary.status();
  InstanceOptions welcoming = strict;
  welcoming.accept_other_users = true;
  welcoming.on_message = [](const InstanceMessage& message) {
    return absl::StrCat("welcome uid ", message.sender_uid);
  };
  absl::StatusOr<SingleInstance> welcoming_primary =
      SingleInstance::Acquire("welcoming", welcoming);
  ASSERT_TRUE(welcoming_primary.ok()) << welcoming_primary.status();
  go.Send();
  go.Send();
  EXPECT_EQ(nobody.Wait(), 0);
  const std::vector<std::string> outcomes =
      absl::StrSplit(result.ReadAll(), '\n');
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_THAT(outcomes[0], HasSubstr("PERMISSION_DENIED"));
  EXPECT_THAT(outcomes[0], HasSubstr("refused the message"));
  EXPECT_THAT(outcomes[0], HasSubstr(absl::StrCat("uid ", kNobodyUid)));
  EXPECT_EQ(outcomes[1], absl::StrCat("welcome uid ", kNobodyUid));
}

TEST_F(MessagingTest, ASocketPlantedByAnotherUserIsNotTrusted) {
  ASSERT_EQ(chmod(dir_.c_str(), 01777), 0);
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  // Root holds the lock without listening; nobody binds NAME.sock hoping to
  // receive root's messages.
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("target", options_);
  ASSERT_TRUE(instance.ok());
  Pipe ready, quit;
  Child impostor = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    const int fd = ListenRaw(SocketOf("target"), 4);
    if (fd < 0) return 2;
    ready.Send();
    quit.Receive(absl::Hours(1));
    return 0;
  });
  ASSERT_EQ(ready.Receive(), '.');
  absl::StatusOr<std::string> reply =
      SingleInstance::Send("target", MakeMessage("secret"), options_);
  EXPECT_TRUE(absl::IsPermissionDenied(reply.status())) << reply.status();
  EXPECT_THAT(std::string(reply.status().message()),
              HasSubstr("does not hold the lock"));
  quit.Send();
  EXPECT_EQ(impostor.Wait(), 0);
}

TEST(MessagingPathTest, LongSocketPathsWorkThroughProcSelfFd) {
  // TEST_TMPDIR plus this is longer than sun_path's 107 bytes.
  std::string dir = MakeTempDir();
  while (dir.size() < 120) {
    dir += "/deeper-directory";
    ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  }
  InstanceOptions options;
  options.directory = dir;
  InstanceOptions listening = options;
  listening.listen = true;
  listening.on_message = [](const InstanceMessage& message) {
    return message.payload + "!";
  };
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire("long", listening);
  ASSERT_TRUE(instance.ok()) << instance.status();
  Child sender = Child::Fork([&] {
    InstanceMessage message;
    message.payload = "far";
    absl::StatusOr<std::string> reply =
        SingleInstance::Send("long", message, options);
    return reply.ok() && *reply == "far!" ? 0 : 1;
  });
  EXPECT_EQ(sender.Wait(), 0);
  ASSERT_TRUE(instance->Release().ok());

  // A name too long even through /proc/self/fd: InvalidArgument naming it.
  const std::string name(120, 'n');
  absl::StatusOr<SingleInstance> too_long =
      SingleInstance::Acquire(name, listening);
  ASSERT_TRUE(absl::IsInvalidArgument(too_long.status())) << too_long.status();
  EXPECT_THAT(std::string(too_long.status().message()),
              HasSubstr(name + ".sock"));
  // The lock was not kept.
  EXPECT_TRUE(SingleInstance::Acquire(name, options).ok());
}

}  // namespace
}  // namespace onlyone
