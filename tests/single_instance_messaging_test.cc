// Tests of SingleInstance messaging with real processes: round trips in
// callback and pollable mode, size limits, timeouts against primaries that
// hang or die, stale sockets and files in the socket's place, long socket
// paths, peers of another user, and peers that stall, flood or send garbage.

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onlyone/internal/instance_channel.h"
#include "onlyone/scoped_file_lock.h"
#include "onlyone/single_instance.h"
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
using ::onlyone::testing::ReadFileOrEmpty;
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

// `message` as the channel carries it, for raw frames.
internal::ChannelMessage OnTheWire(const InstanceMessage& message) {
  return {message.arguments, message.working_directory, message.payload, 0, 0};
}

// A unix socket address for a path of any length: through
// /proc/self/fd/N/BASENAME, N a descriptor of its directory (TEST_TMPDIR's
// paths are longer than sun_path).
class RawAddress {
 public:
  explicit RawAddress(const std::string& path) {
    const size_t slash = path.rfind('/');
    directory_fd_ =
        open(path.substr(0, slash).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    const std::string reachable = absl::StrCat("/proc/self/fd/", directory_fd_,
                                               "/", path.substr(slash + 1));
    address_.sun_family = AF_UNIX;
    std::strncpy(address_.sun_path, reachable.c_str(),
                 sizeof address_.sun_path - 1);
  }
  RawAddress(const RawAddress&) = delete;
  RawAddress& operator=(const RawAddress&) = delete;
  ~RawAddress() { close(directory_fd_); }

  const sockaddr* get() const {
    return reinterpret_cast<const sockaddr*>(&address_);
  }
  socklen_t length() const { return sizeof address_; }

 private:
  int directory_fd_;
  sockaddr_un address_{};
};

// Binds a unix socket at `path` and listens on it; -1 on failure.
int ListenRaw(const std::string& path, int backlog) {
  const RawAddress address(path);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (bind(fd, address.get(), address.length()) != 0 ||
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

// ---------------------------------------------------------------------------
// Raw peers, for what Send() never does.

// Connects to the socket at `path`, waiting at most 2 s for room in a full
// backlog; -1 with errno set on failure.
int ConnectTo(const std::string& path) {
  const RawAddress address(path);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const struct timeval timeout = {2, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) != 0 ||
      connect(fd, address.get(), address.length()) != 0) {
    const int error_number = errno;
    close(fd);
    errno = error_number;
    return -1;
  }
  return fd;
}

bool SendAll(int fd, absl::string_view bytes) {
  return send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
         static_cast<ssize_t>(bytes.size());
}

std::string BigEndian32(uint32_t value) {
  return {static_cast<char>(value >> 24), static_cast<char>(value >> 16),
          static_cast<char>(value >> 8), static_cast<char>(value)};
}

struct RawResponse {
  internal::ResponseCode code;
  std::string text;
};

// Reads one response frame, waiting at most 5 s; nullopt if none comes.
std::optional<RawResponse> ReadResponse(int fd) {
  std::string frame;
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  for (;;) {
    if (frame.size() >= internal::kFrameHeaderBytes) {
      const uint32_t length =
          static_cast<uint32_t>(static_cast<unsigned char>(frame[4])) << 24 |
          static_cast<uint32_t>(static_cast<unsigned char>(frame[5])) << 16 |
          static_cast<uint32_t>(static_cast<unsigned char>(frame[6])) << 8 |
          static_cast<uint32_t>(static_cast<unsigned char>(frame[7]));
      if (frame.compare(0, 4, "OO1R") != 0 || length == 0) return std::nullopt;
      if (frame.size() == internal::kFrameHeaderBytes + length) {
        return RawResponse{static_cast<internal::ResponseCode>(frame[8]),
                           frame.substr(internal::kFrameHeaderBytes + 1)};
      }
    }
    struct pollfd readable = {fd, POLLIN, 0};
    const int64_t left = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left <= 0 || poll(&readable, 1, static_cast<int>(left)) != 1) {
      return std::nullopt;
    }
    char buffer[4096];
    const ssize_t got = recv(fd, buffer, sizeof buffer, 0);
    if (got <= 0) return std::nullopt;
    frame.append(buffer, static_cast<size_t>(got));
  }
}

// Whether the other end has closed `fd` (end of file or reset), without
// waiting.
bool ClosedByPeer(int fd) {
  char byte;
  const ssize_t got = recv(fd, &byte, 1, MSG_DONTWAIT | MSG_PEEK);
  return got == 0 || (got < 0 && errno == ECONNRESET);
}

// How many descriptors process `pid` has open; -1 if unknown.
int OpenDescriptors(pid_t pid) {
  DIR* listing = opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (listing == nullptr) return -1;
  int count = 0;
  while (const dirent* entry = readdir(listing)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(listing);
  return count;
}

InstanceOptions Listening(const InstanceOptions& base, bool pollable) {
  InstanceOptions listening = base;
  listening.listen = true;
  listening.message_timeout = absl::Seconds(5);
  if (!pollable) {
    listening.on_message = [](const InstanceMessage& message) {
      return "pong " + message.payload;
    };
  }
  return listening;
}

// A child that acquires `name` with `options` (listen set) and serves until
// the test sends on `quit`: through on_message if set, else by taking each
// message from message_fd() and replying "pong PAYLOAD". It sends on
// `ready` once it listens, and exits 0 after a clean release.
Child ServeInChild(const std::string& name, const InstanceOptions& options,
                   Pipe& ready, Pipe& quit) {
  return Child::Fork([&, options] {
    absl::StatusOr<SingleInstance> instance =
        SingleInstance::Acquire(name, options);
    if (!instance.ok()) return 2;
    ready.Send();
    for (;;) {
      // In callback mode message_fd() is -1, which poll(2) skips.
      struct pollfd waits[2] = {{quit.read_fd(), POLLIN, 0},
                                {instance->message_fd(), POLLIN, 0}};
      if (poll(waits, 2, -1) < 0) {
        if (errno == EINTR) continue;
        return 4;
      }
      if (waits[0].revents != 0) break;
      absl::StatusOr<std::optional<InstanceMessage>> message =
          instance->TakeMessage();
      if (!message.ok()) return 5;
      if (message->has_value() &&
          !instance->Reply("pong " + (*message)->payload).ok()) {
        return 6;
      }
    }
    return instance->Release().ok() ? 0 : 3;
  });
}

// Acquiring `name` with listen set fails, naming `path` and each of
// `details`; the lock is released and the path left alone.
void ExpectListeningRefused(const InstanceOptions& options,
                            const std::string& name, const std::string& path,
                            const std::vector<std::string>& details) {
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire(name, Listening(options, /*pollable=*/false));
  ASSERT_TRUE(absl::IsFailedPrecondition(instance.status()))
      << instance.status();
  const std::string message(instance.status().message());
  EXPECT_THAT(message, HasSubstr(path));
  EXPECT_THAT(message, HasSubstr("it is left as it is"));
  for (const std::string& detail : details) {
    EXPECT_THAT(message, HasSubstr(detail));
  }
  absl::StatusOr<SingleInstance> again = SingleInstance::Acquire(name, options);
  EXPECT_TRUE(again.ok()) << "the lock was kept: " << again.status();
}

// Instances under TEST_TMPDIR.
class ChannelTest : public InstanceDirectoryTest {};

// ---------------------------------------------------------------------------
// What may be at NAME.sock when the holder starts listening.

TEST_F(ChannelTest, ARegularFileInTheSocketsPlaceIsLeftAndNamed) {
  const std::string path = SocketOf("notes");
  const std::string content = "the user's own notes\n\x01\x02";
  const int fd =
      open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  ASSERT_GE(fd, 0);
  WriteText(fd, content);
  close(fd);
  struct stat before;
  ASSERT_EQ(lstat(path.c_str(), &before), 0);

  ExpectListeningRefused(
      options_, "notes", path,
      {absl::StrCat("is a regular file owned by uid ", geteuid()),
       "remove or rename it"});
  struct stat after;
  ASSERT_EQ(lstat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_TRUE(S_ISREG(after.st_mode));
  EXPECT_EQ(ReadFileOrEmpty(path), content);
}

TEST_F(ChannelTest, ASymlinkInTheSocketsPlaceIsLeftAndNamed) {
  const std::string target = absl::StrCat(dir_, "/elsewhere.txt");
  const std::string content = "pointed at";
  const int fd =
      open(target.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  WriteText(fd, content);
  close(fd);
  const std::string path = SocketOf("linked");
  ASSERT_EQ(symlink(target.c_str(), path.c_str()), 0);

  ExpectListeningRefused(options_, "linked", path,
                         {absl::StrCat("is a symbolic link owned by uid ",
                                       geteuid(), " pointing to ", target)});
  char read_back[4096];
  const ssize_t length = readlink(path.c_str(), read_back, sizeof read_back);
  ASSERT_GT(length, 0) << "the symlink is gone";
  EXPECT_EQ(std::string(read_back, static_cast<size_t>(length)), target);
  EXPECT_EQ(ReadFileOrEmpty(target), content);
}

TEST_F(ChannelTest, AFifoInTheSocketsPlaceIsLeftAndNamed) {
  const std::string path = SocketOf("piped");
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  struct stat before;
  ASSERT_EQ(lstat(path.c_str(), &before), 0);

  ExpectListeningRefused(options_, "piped", path, {"is a FIFO"});
  struct stat after;
  ASSERT_EQ(lstat(path.c_str(), &after), 0);
  EXPECT_TRUE(S_ISFIFO(after.st_mode));
  EXPECT_EQ(after.st_ino, before.st_ino);
}

TEST_F(ChannelTest, ASocketSomeoneListensOnIsLeftAndNamed) {
  // Ours, but live: not provably stale, even though we get the lock.
  const std::string path = SocketOf("live");
  const int listening = ListenRaw(path, 4);
  ASSERT_GE(listening, 0);
  struct stat before;
  ASSERT_EQ(lstat(path.c_str(), &before), 0);

  ExpectListeningRefused(
      options_, "live", path,
      {absl::StrCat("a socket that pid ", getpid(), " listens on")});
  struct stat after;
  ASSERT_EQ(lstat(path.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  const int connected = ConnectTo(path);
  EXPECT_GE(connected, 0) << "the socket no longer reaches its listener";
  close(connected);
  close(listening);
}

// A stale socket of ours at NAME.sock, bound by a holder that is gone, is
// replaced by the next holder, and messages get through.
void ExpectStaleSocketReplaced(const InstanceOptions& options,
                               const std::string& name,
                               const std::string& path) {
  struct stat stale;
  ASSERT_EQ(lstat(path.c_str(), &stale), 0);
  ASSERT_TRUE(S_ISSOCK(stale.st_mode));
  ASSERT_LT(ConnectTo(path), 0);
  ASSERT_EQ(errno, ECONNREFUSED) << "not stale";
  absl::StatusOr<SingleInstance> instance =
      SingleInstance::Acquire(name, Listening(options, /*pollable=*/false));
  ASSERT_TRUE(instance.ok()) << instance.status();
  Child sender = Child::Fork([&] {
    absl::StatusOr<std::string> reply =
        SingleInstance::Send(name, MakeMessage("again"), options);
    return reply.ok() && *reply == "pong again" ? 0 : 1;
  });
  EXPECT_EQ(sender.Wait(), 0);
  ASSERT_TRUE(instance->Release().ok());
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "the socket was left behind";
}

TEST_F(ChannelTest, AStaleSocketWhoseListenerClosedIsReplaced) {
  const std::string path = SocketOf("closed");
  const int listening = ListenRaw(path, 4);
  ASSERT_GE(listening, 0);
  close(listening);
  ExpectStaleSocketReplaced(options_, "closed", path);
}

TEST_F(ChannelTest, AStaleSocketOfAKilledHolderIsReplaced) {
  Pipe ready, quit;
  Child holder =
      ServeInChild("killed", Listening(options_, false), ready, quit);
  ASSERT_EQ(ready.Receive(), '.');
  holder.Kill(SIGKILL);
  EXPECT_EQ(holder.Wait(), 128 + SIGKILL);
  ExpectStaleSocketReplaced(options_, "killed", SocketOf("killed"));
}

TEST_F(MessagingTest, AnotherUsersStaleSocketIsLeftAndNamed) {
  ASSERT_EQ(chmod(dir_.c_str(), 01777), 0);  // a shared directory
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  // Root could remove it from the sticky directory, but must not.
  const std::string path = SocketOf("theirs");
  Child nobody = Child::Fork([&] {
    if (!BecomeNobody()) return 10;
    const int fd = ListenRaw(path, 4);
    if (fd < 0) return 2;
    close(fd);
    return 0;
  });
  ASSERT_EQ(nobody.Wait(), 0);

  ExpectListeningRefused(
      options_, "theirs", path,
      {absl::StrCat("a socket of uid ", kNobodyUid, ", not of uid 0")});
  struct stat after;
  ASSERT_EQ(lstat(path.c_str(), &after), 0);
  EXPECT_TRUE(S_ISSOCK(after.st_mode));
  EXPECT_EQ(after.st_uid, kNobodyUid);
}

// ---------------------------------------------------------------------------
// Peers that stall, flood or send garbage.

class AvailabilityTest : public InstanceDirectoryTest,
                         public ::testing::WithParamInterface<bool> {
 protected:
  bool pollable() const { return GetParam(); }
};

TEST_P(AvailabilityTest, IdleAndStalledPeersDoNotDelayASender) {
  Pipe ready, quit;
  Child primary =
      ServeInChild("busy", Listening(options_, pollable()), ready, quit);
  ASSERT_EQ(ready.Receive(), '.');
  // More peers than the listener keeps open, all staying connected: most
  // send nothing, every fourth half a request.
  const std::string request =
      internal::EncodeRequest(OnTheWire(MakeMessage("never finished")));
  std::vector<int> stalled;
  for (size_t i = 0; i < internal::kMaxListenerConnections + 8; ++i) {
    const int fd = ConnectTo(SocketOf("busy"));
    ASSERT_GE(fd, 0) << "peer " << i << ": " << std::strerror(errno);
    stalled.push_back(fd);
    if (i % 4 == 3) {
      ASSERT_TRUE(SendAll(fd, request.substr(0, request.size() / 2)));
    }
  }
  // The primary's timeout for them is 5 s, as is the sender's.
  options_.message_timeout = absl::Seconds(5);
  for (int round = 0; round < 3; ++round) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> reply = SingleInstance::Send(
        "busy", MakeMessage(absl::StrCat("round ", round)), options_);
    const absl::Duration took = absl::Now() - start;
    ASSERT_TRUE(reply.ok()) << reply.status() << " after " << took;
    EXPECT_EQ(*reply, absl::StrCat("pong round ", round));
    EXPECT_LT(took, absl::Seconds(1));
  }
  // Room was made by closing the peers that had made no progress for the
  // longest; among the silent ones (whose last progress is their connect),
  // that is the oldest first.
  size_t closed = 0;
  bool silent_one_open = false;
  for (size_t i = 0; i < stalled.size(); ++i) {
    const bool was_closed = ClosedByPeer(stalled[i]);
    closed += was_closed ? 1 : 0;
    if (i % 4 == 3) continue;
    EXPECT_FALSE(was_closed && silent_one_open)
        << "silent peer " << i << " was closed before an older one";
    silent_one_open = silent_one_open || !was_closed;
  }
  EXPECT_GE(closed, stalled.size() - internal::kMaxListenerConnections);
  EXPECT_TRUE(ClosedByPeer(stalled[0]));
  EXPECT_FALSE(ClosedByPeer(stalled.back()));
  for (const int fd : stalled) close(fd);
  quit.Send();
  EXPECT_EQ(primary.Wait(), 0);
}

INSTANTIATE_TEST_SUITE_P(CallbackAndPollable, AvailabilityTest,
                         ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Pollable" : "Callback";
                         });

TEST_F(ChannelTest, AFloodOfConnectionsStaysWithinTheCap) {
  Pipe ready, quit;
  Child primary =
      ServeInChild("flooded", Listening(options_, false), ready, quit);
  ASSERT_EQ(ready.Receive(), '.');
  const int baseline = OpenDescriptors(primary.pid());
  ASSERT_GT(baseline, 0);
  // Far more than the cap and the backlog together; each connect(2) would
  // wait (and fail after 2 s) if the listener stopped accepting.
  std::vector<int> flood;
  for (int i = 0; i < 400; ++i) {
    const int fd = ConnectTo(SocketOf("flooded"));
    ASSERT_GE(fd, 0) << "connection " << i << ": " << std::strerror(errno);
    flood.push_back(fd);
    if (i % 50 == 49) {
      EXPECT_LE(OpenDescriptors(primary.pid()),
                baseline + static_cast<int>(internal::kMaxListenerConnections))
          << "after " << i + 1 << " connections";
    }
  }
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> reply =
      SingleInstance::Send("flooded", MakeMessage("still there?"), options_);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "pong still there?");
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_LE(OpenDescriptors(primary.pid()),
            baseline + static_cast<int>(internal::kMaxListenerConnections));
  for (const int fd : flood) close(fd);
  quit.Send();
  EXPECT_EQ(primary.Wait(), 0);
}

TEST_F(ChannelTest, GarbageIsAnsweredAsMalformedWithoutDisturbingOthers) {
  Pipe ready, quit;
  Child primary =
      ServeInChild("strict", Listening(options_, false), ready, quit);
  ASSERT_EQ(ready.Receive(), '.');
  const std::string request = internal::EncodeRequest(OnTheWire(MakeMessage("raw")));
  // A peer that stalls halfway through a request, throughout.
  const int stalled = ConnectTo(SocketOf("strict"));
  ASSERT_GE(stalled, 0);
  ASSERT_TRUE(SendAll(stalled, request.substr(0, 12)));

  struct Garbage {
    std::string bytes;
    internal::ResponseCode code;
    std::string reason;
  };
  std::string trailing = request + "xyz";  // the header claims 3 bytes more
  trailing.replace(4, 4,
                   BigEndian32(static_cast<uint32_t>(request.size() - 8 + 3)));
  const std::vector<Garbage> garbage = {
      {"GET / HTTP/1.0\r\n\r\n", internal::ResponseCode::kMalformed,
       "not an onlyone message"},
      // 1000 arguments in a 4-byte body.
      {"OO1Q" + BigEndian32(4) + BigEndian32(1000),
       internal::ResponseCode::kMalformed, "malformed message"},
      {trailing, internal::ResponseCode::kMalformed, "malformed message"},
      {"OO1Q" + BigEndian32(0xFFFFFFFF), internal::ResponseCode::kTooLarge,
       "exceeds the limit"},
  };
  std::vector<int> fds;
  for (const Garbage& bytes : garbage) {
    fds.push_back(ConnectTo(SocketOf("strict")));
    ASSERT_GE(fds.back(), 0);
    ASSERT_TRUE(SendAll(fds.back(), bytes.bytes));
  }
  absl::StatusOr<std::string> reply =
      SingleInstance::Send("strict", MakeMessage("fine"), options_);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(*reply, "pong fine");
  for (size_t i = 0; i < garbage.size(); ++i) {
    const std::optional<RawResponse> response = ReadResponse(fds[i]);
    ASSERT_TRUE(response.has_value()) << "garbage " << i;
    EXPECT_EQ(response->code, garbage[i].code) << "garbage " << i;
    EXPECT_THAT(response->text, HasSubstr(garbage[i].reason));
    close(fds[i]);
  }
  // A well-formed request by hand is still answered, and the stalled peer
  // is still waited for.
  const int raw = ConnectTo(SocketOf("strict"));
  ASSERT_GE(raw, 0);
  ASSERT_TRUE(SendAll(raw, request));
  const std::optional<RawResponse> handled = ReadResponse(raw);
  ASSERT_TRUE(handled.has_value());
  EXPECT_EQ(handled->code, internal::ResponseCode::kHandled);
  EXPECT_EQ(handled->text, "pong raw");
  close(raw);
  EXPECT_FALSE(ClosedByPeer(stalled));
  close(stalled);
  quit.Send();
  EXPECT_EQ(primary.Wait(), 0);
}

// One request per connection: a peer that pipelines many gets at most one
// answer and is closed; a peer that streams garbage without pause is closed
// instead of being buffered; neither delays a well-behaved sender.
TEST_F(ChannelTest, PipeliningAndStreamingPeersDoNotDelayASender) {
  Pipe ready, quit;
  Child primary =
      ServeInChild("streamed", Listening(options_, false), ready, quit);
  ASSERT_EQ(ready.Receive(), '.');
  const int baseline = OpenDescriptors(primary.pid());
  ASSERT_GT(baseline, 0);

  std::string pipelined;
  for (int i = 0; i < 50; ++i) {
    pipelined += internal::EncodeRequest(OnTheWire(MakeMessage(absl::StrCat("p", i))));
  }
  const int pipeliner = ConnectTo(SocketOf("streamed"));
  ASSERT_GE(pipeliner, 0);
  ASSERT_TRUE(SendAll(pipeliner, pipelined));

  const int streamer = ConnectTo(SocketOf("streamed"));
  ASSERT_GE(streamer, 0);
  constexpr size_t kStreamBound = size_t{64} << 20;
  std::atomic<size_t> streamed{0};
  std::atomic<bool> stream_refused{false};
  std::thread stream([&] {
    const std::string chunk(64 << 10, 'x');
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (streamed.load() < kStreamBound && absl::Now() < deadline) {
      struct pollfd writable = {streamer, POLLOUT, 0};
      if (poll(&writable, 1, 100) < 0) break;
      if ((writable.revents & (POLLERR | POLLHUP)) != 0) {
        stream_refused = true;
        break;
      }
      if ((writable.revents & POLLOUT) == 0) continue;
      const ssize_t sent = send(streamer, chunk.data(), chunk.size(),
                                MSG_NOSIGNAL | MSG_DONTWAIT);
      if (sent < 0 && errno != EAGAIN && errno != EINTR) {
        stream_refused = true;  // EPIPE or ECONNRESET: the primary closed it
        break;
      }
      if (sent > 0) streamed += static_cast<size_t>(sent);
    }
  });

  for (int round = 0; round < 5; ++round) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::string> reply = SingleInstance::Send(
        "streamed", MakeMessage(absl::StrCat("round ", round)), options_);
    const absl::Duration took = absl::Now() - start;
    ASSERT_TRUE(reply.ok()) << reply.status() << " after " << took;
    EXPECT_EQ(*reply, absl::StrCat("pong round ", round));
    EXPECT_LT(took, absl::Seconds(1));
  }
  stream.join();
  EXPECT_TRUE(stream_refused.load())
      << "the primary kept reading " << streamed.load() << " bytes of garbage";
  EXPECT_LT(streamed.load(), kStreamBound);

  // The pipeliner: the first request answered (or refused), then closed
  // without a second answer.
  const std::optional<RawResponse> first = ReadResponse(pipeliner);
  ASSERT_TRUE(first.has_value());
  EXPECT_FALSE(ReadResponse(pipeliner).has_value());
  EXPECT_TRUE(ClosedByPeer(pipeliner));
  close(pipeliner);
  close(streamer);

  absl::StatusOr<std::string> after =
      SingleInstance::Send("streamed", MakeMessage("after"), options_);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(*after, "pong after");
  quit.Send();
  EXPECT_EQ(primary.Wait(), 0);
}

}  // namespace
}  // namespace onlyone
