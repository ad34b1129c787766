// NewThreadsBlockSignals: the one rule for the library's own threads (the
// soft lock's heartbeat, the Redis lease renewer, the instance channel's
// listener, the semaphore's slot waiters): they never take the process's
// asynchronous signals, so that a process-directed signal (SIGTERM,
// SIGCHLD, a signal the application reads through a signalfd with it
// blocked on its own threads) goes to the application's threads, not to
// ours, where its default action would end the process or discard it.
//
// A thread is born with its creator's signal mask, so the library starts
// its threads inside the scope of one of these: they block the signals from
// their first instruction. Blocking them as a thread's first statement, as
// the heartbeat and the listener once did, left a window before the new
// thread first ran in which a SIGCHLD could be taken by it and discarded;
// `onlyone run --soft` then waited for ever for a command that had exited
// (seen once in about 130 runs of a test on a loaded machine).
//
// Example:
//   {
//     internal::NewThreadsBlockSignals blocked;
//     worker = std::thread(Work);
//   }  // the calling thread's own mask is back
//
// Thread safety: changes the calling thread's mask only, for its scope.

#ifndef ONLYONE_LIB_INTERNAL_THREAD_SIGNALS_H_
#define ONLYONE_LIB_INTERNAL_THREAD_SIGNALS_H_

#include <pthread.h>
#include <signal.h>

namespace onlyone::internal {

class [[nodiscard]] NewThreadsBlockSignals {
 public:
  // Blocks every signal on the calling thread but the synchronous ones (a
  // fault must still kill the process, not hang it).
  NewThreadsBlockSignals() {
    sigset_t all;
    sigfillset(&all);
    for (int synchronous :
         {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) {
      sigdelset(&all, synchronous);
    }
    pthread_sigmask(SIG_BLOCK, &all, &saved_);
  }
  NewThreadsBlockSignals(const NewThreadsBlockSignals&) = delete;
  NewThreadsBlockSignals& operator=(const NewThreadsBlockSignals&) = delete;
  ~NewThreadsBlockSignals() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }

 private:
  sigset_t saved_;
};

}  // namespace onlyone::internal

#endif  // ONLYONE_LIB_INTERNAL_THREAD_SIGNALS_H_
