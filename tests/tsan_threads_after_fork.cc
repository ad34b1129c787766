// The Redis lock's tests fork children (of a process whose lease-renewal
// thread runs) that take leases, and a lease's renewal thread starts in the
// child. ThreadSanitizer refuses to start threads after a multi-threaded
// fork unless told otherwise. glibc makes that safe (malloc and the dynamic
// loader are fork-safe), and the child's lock code never touches what the
// parent's threads held (lib/redis_lock.cc, ProcessRedis). The options in
// TSAN_OPTIONS (.bazelrc) are added to these.

#if defined(__SANITIZE_THREAD__)
extern "C" const char* __tsan_default_options() { return "die_after_fork=0"; }
#endif
