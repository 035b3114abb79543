/* Small C wrappers for what Swift cannot call cleanly on Linux: GNU-only
 * declarations (SO_PEERCRED, accept4, signalfd), variadic calls (prctl) and
 * macros. Every function returns -1 and leaves errno set on failure unless
 * its comment says otherwise. */
#ifndef ASTERISM_CKEYDSHIMS_H
#define ASTERISM_CKEYDSHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** SO_PEERCRED of a connected Unix socket: the peer's pid, uid and gid at connect time. */
int keyd_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);

/** prctl(PR_SET_NO_NEW_PRIVS, 1): execve can never grant privileges again. */
int keyd_prctl_no_new_privs(void);
/** prctl(PR_GET_NO_NEW_PRIVS): 1, 0, or -1. */
int keyd_prctl_get_no_new_privs(void);
/** prctl(PR_SET_DUMPABLE, value). */
int keyd_prctl_set_dumpable(int value);
/** prctl(PR_GET_DUMPABLE): 0, 1, 2, or -1. */
int keyd_prctl_get_dumpable(void);

/** mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT). */
int keyd_mlockall_onfault(void);

/** explicit_bzero: zeroes n bytes in a way the compiler may not elide. */
void keyd_wipe(void *p, size_t n);

/** Blocks the signals for the calling thread (pthread_sigmask) and returns a
 *  signalfd (SFD_CLOEXEC | SFD_NONBLOCK) that reads them. Call before starting
 *  threads, or the signals may be delivered to another thread instead. */
int keyd_signalfd_for(const int *signals, int count);
/** Reads one signalfd_siginfo: the signal number, or -1 with errno (EAGAIN when none is pending). */
int keyd_signalfd_read(int fd);

/** sigaction(sig, SIG_IGN). */
int keyd_ignore_signal(int sig);

/** accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK). */
int keyd_accept_cloexec_nonblock(int fd);

/** socket(2) type flags and send(2) flags, as plain integers. */
int keyd_sock_cloexec(void);
int keyd_sock_nonblock(void);
int keyd_msg_nosignal(void);
/** open(2)'s O_PATH flag (GNU-only in glibc's headers), as a plain integer. */
int keyd_o_path(void);

/** getrandom(2) with the given flags (0 blocks until the pool is initialized). */
ssize_t keyd_getrandom(void *buffer, size_t length, unsigned int flags);

/** RLIMIT_NOFILE soft and hard limits. */
int keyd_get_nofile_limit(uint64_t *soft, uint64_t *hard);
/** Sets RLIMIT_NOFILE's soft limit, keeping the hard limit. */
int keyd_set_nofile_soft_limit(uint64_t soft);


#endif
