// single_instance_forward: the first launch becomes the primary; every later
// launch hands its command line to it and exits, as an editor opens a file
// given to a second launch in the window it already has.
//
//   single_instance_forward notes.txt          # primary: waits for launches
//   single_instance_forward todo.txt --line=3  # hands over, prints the reply
//   single_instance_forward --quit             # tells the primary to exit
//
// Arguments are forwarded as they are (no flag parsing), except a first
// --name=NAME, which picks the instance name.
//
// The primary prints, for each later launch,
//   launch from pid 4712 (uid 1000) in /home/alice: todo.txt --line=3
// and answers "opened by pid 4711"; the later launch prints that answer and
// exits 0. The primary runs its own event loop: it polls message_fd() and a
// signalfd (Ctrl-C, SIGTERM) together, and takes messages with
// TakeMessage()/Reply(), so no library thread ever runs its code.

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "onlyone/single_instance.h"

namespace {

// The primary's loop: returns the exit code.
int RunPrimary(const std::string& name, onlyone::SingleInstance& instance) {
  // Signals are read from a descriptor, so blocking them first.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  const int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  if (signal_fd < 0) {
    perror("signalfd");
    return 1;
  }
  std::cout << "pid " << getpid() << " is the primary " << name
            << "; launch me again to hand it arguments (--quit to stop it)"
            << std::endl;
  for (;;) {
    struct pollfd ready[2] = {{instance.message_fd(), POLLIN, 0},
                              {signal_fd, POLLIN, 0}};
    if (poll(ready, 2, -1) < 0) {
      if (errno == EINTR) continue;
      perror("poll");
      return 1;
    }
    if (ready[1].revents != 0) {
      std::cout << "signalled; exiting" << std::endl;
      return 0;
    }
    absl::StatusOr<std::optional<onlyone::InstanceMessage>> message =
        instance.TakeMessage();
    if (!message.ok()) {
      std::cerr << message.status().message() << "\n";
      return 1;
    }
    if (!message->has_value()) continue;  // its sender gave up meanwhile
    const onlyone::InstanceMessage& launch = **message;
    std::cout << "launch from pid " << launch.sender_pid << " (uid "
              << launch.sender_uid << ") in " << launch.working_directory
              << ": " << absl::StrJoin(launch.arguments, " ") << std::endl;
    const bool quit =
        launch.arguments.size() == 1 && launch.arguments[0] == "--quit";
    absl::Status replied =
        instance.Reply(quit ? absl::StrCat("pid ", getpid(), " is exiting")
                            : absl::StrCat("opened by pid ", getpid()));
    if (!replied.ok()) std::cerr << replied.message() << "\n";
    if (quit) return 0;  // the destructor stops listening and releases
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string name = "onlyone-forward-example";
  int first_argument = 1;
  if (absl::string_view flag = argc > 1 ? argv[1] : "";
      absl::ConsumePrefix(&flag, "--name=")) {
    name = std::string(flag);
    first_argument = 2;
  }
  onlyone::InstanceMessage launch;
  for (int i = first_argument; i < argc; ++i)
    launch.arguments.push_back(argv[i]);
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) != nullptr) launch.working_directory = cwd;

  onlyone::InstanceOptions options;
  options.listen = true;  // pollable mode: no on_message callback
  absl::StatusOr<onlyone::SingleInstance> instance =
      onlyone::SingleInstance::Acquire(name, options);
  if (instance.ok()) {
    if (!launch.arguments.empty() && launch.arguments[0] == "--quit") {
      std::cerr << "no primary " << name << " is running\n";
      return 1;
    }
    return RunPrimary(name, *instance);
  }
  if (!absl::IsUnavailable(instance.status())) {
    std::cerr << instance.status().message() << "\n";
    return 1;
  }
  // Another copy is the primary: hand over and exit.
  absl::StatusOr<std::string> reply =
      onlyone::SingleInstance::Send(name, launch, options);
  if (!reply.ok()) {
    // e.g. DeadlineExceeded from a hung primary, or Unavailable if it exited
    // (or had not started listening yet) between our try and the send.
    std::cerr << reply.status().message() << "\n";
    return 1;
  }
  std::cout << *reply << std::endl;
  return 0;
}
