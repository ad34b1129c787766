// BlockSignalsOnThisThread: the one rule for the library's own threads
// (the soft lock's heartbeat, the instance channel's listener): they never
// take the process's asynchronous signals, so that a process-directed
// signal (SIGTERM, SIGCHLD, a signal the application reads through a
// signalfd with it blocked on its own threads) goes to the application's
// threads, not to ours, where its default action would end the process.
//
// Example (first thing in the thread's function):
//   std::thread([] { internal::BlockSignalsOnThisThread(); Work(); });
//
// Thread safety: changes the calling thread's mask only.

#ifndef ONLYONE_LIB_INTERNAL_THREAD_SIGNALS_H_
#define ONLYONE_LIB_INTERNAL_THREAD_SIGNALS_H_

#include <pthread.h>
#include <signal.h>

namespace onlyone::internal {

// Blocks every signal on the calling thread but the synchronous ones (a
// fault must still kill the process, not hang it).
inline void BlockSignalsOnThisThread() {
  sigset_t all;
  sigfillset(&all);
  for (int synchronous : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) {
    sigdelset(&all, synchronous);
  }
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
}

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_THREAD_SIGNALS_H_
