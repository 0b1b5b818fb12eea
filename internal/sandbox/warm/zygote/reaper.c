/*
 * pid 1 of a warm run's pid namespace (see zygote.c, fork_run).
 *
 * A cold run's code is pid 2 under the sandbox init; a warm run's must be
 * too: as pid 1 its own signals would be ignored (SIGTERM to itself does
 * nothing to an init) and it would inherit every orphan. So the template
 * starts this small program as pid 1 of each child's namespace and forks
 * the run's process (pid 2) from it. This program holds the child's
 * socket to the server (fd 3), which the run's process closes before the
 * code starts: the code never sees a descriptor of the server's.
 *
 * It reaps every orphan, and reports how pid 2 ended: either early, when
 * pid 2 queues its exit status to it (REPORT_SIG with the status as value,
 * sent just before it exits, so the server need not wait for its address
 * space to be torn down), or from wait(2). It runs as the sandbox user,
 * not dumpable, so that the code may signal it (only REPORT_SIG and
 * SIGCHLD have an effect: an init ignores every other signal sent from its
 * own namespace) but not trace it, read its memory or take its socket. A
 * forged report is no better for the code than exiting with that status:
 * the server kills the namespace on receipt either way.
 *
 * Its saved uid is the sandbox user's (that is what lets the code signal
 * it), its real and effective uids stay root of the sandbox's user
 * namespace, with every capability dropped: a parked child's processes
 * never show up as the sandbox user's, whom the server's leftover checks
 * look for, and the code cannot trace it (a ptracer must match all three).
 *
 * The server compiles it (statically where it can: no dynamic loader on
 * the path of every run) next to zygote.so.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* SANDBOX_UID comes from the policy (policy_linux.go), defined ahead of
 * this source when the server compiles it. */
#ifndef SANDBOX_UID
#error "compile with the policy header (policyHeader)"
#endif
#define SOCK 3
#define RUN_PID 2
#define REPORT_SIG (SIGRTMIN + 2) /* zygote.c's REPORT_SIG */

static void report(int kind, int value) {
    char json[64], buf[68];
    int n = snprintf(json, sizeof json, kind ? "{\"signal\":%d}" : "{\"exit\":%d}", value);
    buf[0] = buf[1] = buf[2] = 0;
    buf[3] = (char)n;
    memcpy(buf + 4, json, (size_t)n);
    while (send(SOCK, buf, (size_t)n + 4, MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
    _exit(kind ? 128 + value : value & 0xff);
}

/* reap collects every exited child; it reports (and never returns) when
 * the run's process is among them. */
static void reap(void) {
    for (;;) {
        int st;
        pid_t w = waitpid(-1, &st, WNOHANG);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == ECHILD)
            report(0, 125); /* no run process at all */
        if (w <= 0)
            return;
        if (w == RUN_PID) {
            if (WIFSIGNALED(st))
                report(1, WTERMSIG(st));
            report(0, WEXITSTATUS(st));
        }
    }
}

int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, REPORT_SIG);
    sigprocmask(SIG_BLOCK, &set, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* Nothing but the socket: the template's stdio is its log. */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int i = 0; i < 3; i++)
        if (null >= 0 && null != i)
            dup2(null, i);
    syscall(SYS_close_range, SOCK + 1, ~0U, 0);
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2];
    memset(none, 0, sizeof none);
    if (setgroups(0, NULL) != 0 || setresuid(0, 0, SANDBOX_UID) != 0 || prctl(PR_SET_DUMPABLE, 0) != 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || syscall(SYS_capset, &hdr, none) != 0)
        report(0, 125);
    /* The run's process may have ended before the signals were blocked. */
    reap();
    for (;;) {
        siginfo_t si;
        int s = sigwaitinfo(&set, &si);
        if (s < 0)
            continue;
        if (s == REPORT_SIG) {
            if (si.si_code == SI_QUEUE && si.si_pid == RUN_PID)
                report(0, si.si_value.sival_int & 0xff);
            continue;
        }
        reap();
    }
}
