/*
 * The native half of codeexec's warm Python template (see ../zygote.py).
 *
 * The template's fork loop and everything a child does before and after
 * the code runs live here, not in Python, for one reason: every page a
 * forked process touches costs it a fault (on a paravirtualised VM ~5 us
 * to read a page a new process has not touched yet, ~20 us to write one),
 * and Python touches hundreds of pages for a few lines (every object it
 * uses has its reference count written). This code touches a few pages.
 * Measured on the project's 2-vCPU VM: setting a child up here costs
 * ~0.5 ms of CPU against ~7 ms in Python, and the template, which no
 * longer runs Python between forks, stops copying its own pages. For the
 * same reason the children's random generators are reseeded here
 * (zy_add_mt) and the pages every child writes are pinned (zy_pin).
 *
 * The server compiles this file once (cc -O2 -shared -fPIC) and the
 * template loads it with ctypes. Nothing here may hold a secret: children
 * get a copy of this memory.
 *
 * Protocol (fd numbers are the template's):
 *   ctrl (SOCK_SEQPACKET, from the server): a datagram carrying one
 *     descriptor, the new child's socket, means "fork a child"; end of
 *     file means "exit". Replies are JSON datagrams: {"forked":pid},
 *     {"exit":pid,"status":wait-status}, {"error":"..."}.
 *   a child's socket (SOCK_STREAM): frames of a 4-byte big-endian length
 *     and a body. The run's process (pid 2, see fork_run) sends
 *     {"ready":true} when parked, receives one request (the 4-byte header
 *     carries four descriptors: workdir mount, stdin, stdout, stderr; see
 *     parse_request for the body), sends {"started":true} (or
 *     {"error":"..."}) and closes its end before the code starts; at the
 *     end pid 1 (reaper.c) sends the status: {"exit":N} or {"signal":N}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

/* SANDBOX_UID and SANDBOX_NOFILE come from the policy (policy_linux.go),
 * defined ahead of this source when the server compiles it. */
#if !defined(SANDBOX_UID) || !defined(SANDBOX_NOFILE)
#error "compile with the policy header (policyHeader)"
#endif
#define MAX_CHILDREN 64
/* A run's process queues its exit status to pid 1 with this (reaper.c). */
#define REPORT_SIG (SIGRTMIN + 2)
#define MAX_FILTERS 8
#define REQUEST_VERSION 1

/* Set once by zy_init in the template. */
static int ctrl_fd = -1, own_pidns = -1, reaper_fd = -1, pin_ring = -1;
static long pool_disk;
static struct sock_fprog filters[MAX_FILTERS];
static int nfilters;
static char *pool_env; /* the pool's environment, NUL-separated */
static size_t pool_env_len;

/* Mersenne Twister states to reseed in each child (zy_add_mt). */
#define MAX_MT 4
#define MT_WORDS 624
static struct {
    uint32_t *key;
    int *pos;
} mts[MAX_MT];
static int nmts;

/* A child's own state. */
static int child_sock = -1;

static const char *const proc_masked[] = {
    "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/sysrq-trigger", "/proc/kallsyms", NULL,
};

/* ---- framing ---- */

static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* send_frame sends one length-prefixed JSON frame in a single write, so
 * that the server sees the sender's credentials on its first bytes. */
static int send_frame(int fd, const char *json) {
    char buf[1024];
    size_t n = strlen(json);
    if (n > sizeof buf - 4)
        n = sizeof buf - 4;
    buf[0] = (char)(n >> 24), buf[1] = (char)(n >> 16), buf[2] = (char)(n >> 8), buf[3] = (char)n;
    memcpy(buf + 4, json, n);
    return write_all(fd, buf, n + 4);
}

/* json_str appends s as a JSON string (quotes, escapes) to out. */
static void json_str(char *out, size_t cap, const char *s) {
    size_t o = strlen(out);
    if (o + 2 >= cap)
        return;
    out[o++] = '"';
    for (; *s && o + 8 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    out[o] = 0;
}

/* child_fail reports a setup error to the server and ends the child. */
static void child_fail(const char *fmt, ...) {
    char msg[512], json[800] = "{\"error\":";
    int e = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    if (e != 0 && n + 4 < sizeof msg)
        snprintf(msg + n, sizeof msg - n, ": %s", strerror(e));
    json_str(json, sizeof json - 2, msg);
    strcat(json, "}");
    send_frame(child_sock, json);
    _exit(125);
}

#define CHECK(call, ...)                  \
    do {                                  \
        errno = 0;                        \
        if ((call) != 0)                  \
            child_fail(__VA_ARGS__);      \
    } while (0)

/* ---- the child: set up before parking ---- */

/* reseed gives every registered generator a fresh state from the kernel:
 * otherwise every child would draw the template's numbers. A uniformly
 * random state is what seeding approximates; the top bit of the first
 * word is set, as the reference seeding does, so it is never all zero,
 * and the position at the end makes the next draw regenerate. */
static void reseed(void) {
    for (int i = 0; i < nmts; i++) {
        uint32_t k[MT_WORDS];
        size_t got = 0;
        while (got < sizeof k) {
            ssize_t n = getrandom((char *)k + got, sizeof k - got, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                child_fail("getrandom");
            got += (size_t)n;
        }
        k[0] |= 0x80000000u;
        memcpy(mts[i].key, k, sizeof k);
        *mts[i].pos = MT_WORDS;
    }
}

/* remount_ro makes the bind mount at p read-only, keeping the flags it
 * has: in a user namespace the kernel refuses to drop flags that a more
 * privileged namespace set (under Docker, /dev/null is nosuid and noexec:
 * a plain read-only remount of a bind of it fails with EPERM). */
static int remount_ro(const char *p, unsigned long extra) {
    static const struct {
        unsigned long st, ms;
    } keep[] = {
        {ST_NOSUID, MS_NOSUID},   {ST_NODEV, MS_NODEV},           {ST_NOEXEC, MS_NOEXEC},
        {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME},
    };
    struct statfs st;
    unsigned long fl = MS_REMOUNT | MS_BIND | MS_RDONLY | extra;
    if (statfs(p, &st) != 0)
        return -1;
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if ((unsigned long)st.f_flags & keep[i].st)
            fl |= keep[i].ms;
    return mount(NULL, p, NULL, fl, NULL);
}

static void scratch_opts(char *buf, size_t cap, long disk) {
    long inodes = disk / 4096 > 1024 ? disk / 4096 : 1024;
    snprintf(buf, cap, "size=%ld,nr_inodes=%ld,mode=1777", disk, inodes);
}

/* child_setup runs in the run's process, pid 2, in the mount, ipc and uts
 * namespaces pid 1 made (fork_run). */
static void child_setup(void) {
    char opts[128];
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    CHECK(sethostname("sandbox", 7), "sethostname");
    CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "mount /");
    /* The template's own /proc (its pid namespace), /tmp (the zygote),
     * /dev/shm, /dev/pts and /mnt/data are dropped, not shared. A user
     * namespace may mount a proc only while one is visible: mount the new
     * one aside, drop the template's, move the new one in place. */
    CHECK(mount("proc", "/tmp", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL), "mount proc");
    CHECK(umount2("/proc", MNT_DETACH), "umount /proc");
    CHECK(mount("/tmp", "/proc", NULL, MS_MOVE, NULL), "move proc");
    const char *drop[] = {"/tmp", "/dev/shm", "/dev/pts", "/mnt/data", NULL};
    for (int i = 0; drop[i]; i++)
        if (umount2(drop[i], MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
            child_fail("umount %s", drop[i]);
    for (int i = 0; proc_masked[i]; i++) {
        if (mount("/dev/null", proc_masked[i], NULL, MS_BIND, NULL) != 0) {
            if (errno == ENOENT)
                continue;
            child_fail("mask %s", proc_masked[i]);
        }
        CHECK(remount_ro(proc_masked[i], 0), "remount %s", proc_masked[i]);
    }
    CHECK(mount("/proc/sys", "/proc/sys", NULL, MS_BIND | MS_REC, NULL), "bind /proc/sys");
    CHECK(remount_ro("/proc/sys", MS_NOSUID | MS_NODEV | MS_NOEXEC), "remount /proc/sys");
    CHECK(mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"),
          "mount /dev/pts");
    /* Sized for the pool's disk limit; a request with another remounts. */
    scratch_opts(opts, sizeof opts, pool_disk);
    CHECK(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts), "mount /tmp");
    CHECK(mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts), "mount /dev/shm");
    struct rlimit core = {0, 0}, nofile = {SANDBOX_NOFILE, SANDBOX_NOFILE};
    CHECK(setrlimit(RLIMIT_CORE, &core), "rlimit core");
    CHECK(setrlimit(RLIMIT_NOFILE, &nofile), "rlimit nofile");
    /* The bounding set only limits what an exec can grant: the effective
     * capabilities the request needs stay until the uid change. */
    for (int cap = 0; cap < 64; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL)
                break;
            child_fail("drop capability %d", cap);
        }
    }
}

/* ---- the child: one request ---- */

struct request {
    int exec;
    long disk, fsize, cpu_secs;
    uint32_t argc, envc;
    char **argv, **envp; /* NULL-terminated copies */
    char *args;          /* argv as NUL-separated bytes, for Python */
    size_t args_len;
};

struct reader {
    const unsigned char *p, *end;
};

static int rd_u32(struct reader *r, uint32_t *v) {
    if (r->end - r->p < 4)
        return -1;
    *v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
    r->p += 4;
    return 0;
}

static int rd_u64(struct reader *r, long *v) {
    uint32_t hi, lo;
    if (rd_u32(r, &hi) || rd_u32(r, &lo))
        return -1;
    uint64_t x = (uint64_t)hi << 32 | lo;
    if (x > LONG_MAX)
        return -1;
    *v = (long)x;
    return 0;
}

/* rd_bytes returns the next n bytes of the body, in place. */
static const unsigned char *rd_bytes(struct reader *r, uint32_t *n) {
    if (rd_u32(r, n) || (uint64_t)(r->end - r->p) < *n)
        return NULL;
    const unsigned char *b = r->p;
    r->p += *n;
    return b;
}

/* rd_strings reads count length-prefixed strings into a NULL-terminated
 * array of NUL-terminated copies. Strings with a NUL inside are refused. */
static char **rd_strings(struct reader *r, uint32_t *count) {
    if (rd_u32(r, count) || *count > 1 << 20)
        return NULL;
    char **v = calloc((size_t)*count + 1, sizeof *v);
    if (v == NULL)
        return NULL;
    for (uint32_t i = 0; i < *count; i++) {
        uint32_t n;
        const unsigned char *b = rd_bytes(r, &n);
        if (b == NULL || memchr(b, 0, n) != NULL)
            return NULL;
        v[i] = strndup((const char *)b, n);
        if (v[i] == NULL)
            return NULL;
    }
    return v;
}

/* path_ok accepts only a clean absolute path below /tmp/: no empty, "."
 * or ".." component, no trailing slash. The server sends only such paths;
 * this is a second line. */
static int path_ok(const char *p) {
    if (strncmp(p, "/tmp/", 5) != 0)
        return 0;
    const char *c = p + 5;
    for (;;) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        if (e == NULL)
            return 1;
        c = e + 1;
    }
}

/* mkdir_owned creates the directories above path (below /tmp), owned by
 * the sandbox user. */
static void mkdir_owned(const char *path) {
    char d[PATH_MAX];
    if (strlen(path) >= sizeof d)
        child_fail("path too long");
    strcpy(d, path);
    for (char *s = d + 5; (s = strchr(s, '/')) != NULL; s++) {
        *s = 0;
        if (mkdir(d, 0755) == 0) {
            if (lchown(d, SANDBOX_UID, SANDBOX_UID) != 0)
                child_fail("chown %s", d);
        } else if (errno != EEXIST) {
            child_fail("mkdir %s", d);
        }
        *s = '/';
    }
}

static void write_file(const char *path, uint32_t mode, const unsigned char *data, uint32_t n) {
    if (!path_ok(path)) {
        errno = 0;
        child_fail("bad file path %s", path);
    }
    mkdir_owned(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        child_fail("create %s", path);
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            child_fail("write %s", path);
        data += w;
        n -= (uint32_t)w;
    }
    CHECK(fchown(fd, SANDBOX_UID, SANDBOX_UID), "chown %s", path);
    CHECK(fchmod(fd, (mode ? mode : 0644) & 0777), "chmod %s", path);
    close(fd);
}

/* parse_request reads the body the server built (warmRequest.marshal),
 * all integers big-endian:
 *   u32 version, u32 exec, u64 disk, u64 fsize, u64 cpu_secs,
 *   u32 argc, argc x (u32 n, n bytes), u32 envc, envc x (u32 n, n bytes),
 *   u32 nfiles, nfiles x (u32 n, path, u32 mode, u32 n, data)
 * up to the files, which write_files reads from r afterwards. */
static void parse_request(struct request *q, struct reader *r) {
    uint32_t version, exec;
    errno = 0;
    if (rd_u32(r, &version) || version != REQUEST_VERSION)
        child_fail("request: unknown version");
    if (rd_u32(r, &exec) || rd_u64(r, &q->disk) || rd_u64(r, &q->fsize) || rd_u64(r, &q->cpu_secs))
        child_fail("request: short header");
    q->exec = exec != 0;
    q->argv = rd_strings(r, &q->argc);
    if (q->argv == NULL || q->argc == 0)
        child_fail("request: bad argv");
    q->envp = rd_strings(r, &q->envc);
    if (q->envp == NULL)
        child_fail("request: bad env");
    if (!q->exec) {
        /* Python code runs with the template's environment: a request
         * with another must not be served by this child. */
        size_t o = 0;
        for (uint32_t i = 0; i < q->envc; i++) {
            size_t n = strlen(q->envp[i]) + 1;
            if (o + n > pool_env_len || memcmp(pool_env + o, q->envp[i], n) != 0)
                child_fail("the request's environment is not the pool's");
            o += n;
        }
        if (o != pool_env_len)
            child_fail("the request's environment is not the pool's");
    }
    q->args_len = 0;
    for (uint32_t i = 0; i < q->argc; i++)
        q->args_len += strlen(q->argv[i]) + 1;
    q->args = malloc(q->args_len);
    if (q->args == NULL)
        child_fail("request: out of memory");
    size_t o = 0;
    for (uint32_t i = 0; i < q->argc; i++) {
        size_t n = strlen(q->argv[i]) + 1;
        memcpy(q->args + o, q->argv[i], n);
        o += n;
    }
}

static void write_files(struct reader *r) {
    uint32_t nfiles;
    errno = 0;
    if (rd_u32(r, &nfiles))
        child_fail("request: no file count");
    for (uint32_t i = 0; i < nfiles; i++) {
        uint32_t pn, mode, dn;
        const unsigned char *p = rd_bytes(r, &pn);
        if (p == NULL || memchr(p, 0, pn) != NULL || rd_u32(r, &mode))
            child_fail("request: bad file");
        const unsigned char *d = rd_bytes(r, &dn);
        if (d == NULL)
            child_fail("request: bad file data");
        char *path = strndup((const char *)p, pn);
        if (path == NULL)
            child_fail("request: out of memory");
        write_file(path, mode, d, dn);
        free(path);
    }
    if (r->p != r->end)
        child_fail("request: trailing bytes");
}

/* recv_request waits for the server's request: the 4-byte length with
 * four descriptors, then the body. */
static unsigned char *recv_request(int fds[4], size_t *len) {
    unsigned char head[4];
    char cbuf[CMSG_SPACE(4 * sizeof(int))];
    struct iovec iov = {head, sizeof head};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    ssize_t n;
    do
        n = recvmsg(child_sock, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        _exit(0); /* the pool is shutting down */
    if (n < 0)
        child_fail("receive request");
    int got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int *in = (int *)CMSG_DATA(c);
            for (int i = 0; i < k; i++) {
                if (got < 4)
                    fds[got++] = in[i];
                else
                    close(in[i]);
            }
        }
    }
    errno = 0;
    if (got != 4 || (mh.msg_flags & MSG_CTRUNC))
        child_fail("expected 4 descriptors, got %d", got);
    if (n < 4 && read_all(child_sock, head + n, (size_t)(4 - n)) != 0)
        child_fail("short request header");
    size_t body = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
    unsigned char *b = malloc(body ? body : 1);
    if (b == NULL)
        child_fail("request of %zu bytes: out of memory", body);
    if (read_all(child_sock, b, body) != 0)
        child_fail("short request");
    *len = body;
    return b;
}

/* child_enter does what depends on the request, then drops privileges:
 * scratch size, workdir, files, stdio, limits, uid, no_new_privs and the
 * server's seccomp programs. */
static void child_enter(struct request *q, int fds[4], const unsigned char *body, size_t len) {
    char opts[128];
    struct reader r = {body, body + len};
    parse_request(q, &r);
    /* The server moved this process to the run's cgroup before it sent the
     * request: a cgroup namespace rooted there hides the host's paths. */
    CHECK(unshare(CLONE_NEWCGROUP), "unshare cgroup namespace");
    if (q->disk != pool_disk) {
        scratch_opts(opts, sizeof opts, q->disk);
        CHECK(mount(NULL, "/tmp", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts), "remount /tmp");
        CHECK(mount(NULL, "/dev/shm", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC, opts), "remount /dev/shm");
    }
    CHECK((int)syscall(SYS_move_mount, fds[0], "", AT_FDCWD, "/mnt/data", MOVE_MOUNT_F_EMPTY_PATH),
          "move_mount /mnt/data");
    close(fds[0]);
    write_files(&r);
    umask(022);
    for (int i = 0; i < 3; i++) {
        CHECK(dup2(fds[i + 1], i) < 0, "dup2");
        close(fds[i + 1]);
    }
    CHECK(chdir("/mnt/data"), "chdir /mnt/data");
    struct rlimit fsize = {(rlim_t)q->fsize, (rlim_t)q->fsize}, cpu = {(rlim_t)q->cpu_secs, (rlim_t)q->cpu_secs + 1};
    CHECK(setrlimit(RLIMIT_FSIZE, &fsize), "rlimit fsize");
    CHECK(setrlimit(RLIMIT_CPU, &cpu), "rlimit cpu");
    CHECK(setgroups(0, NULL), "setgroups");
    CHECK(setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID), "setresgid");
    CHECK(setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID), "setresuid");
    CHECK(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs");
    for (int i = 0; i < nfilters; i++)
        CHECK(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &filters[i], 0, 0), "seccomp");
    if (setsid() < 0)
        child_fail("setsid");
}

/* report_exit hands the run's exit status to pid 1 (reaper.c), which
 * tells the server, then exits: tearing down this copy of the template
 * takes milliseconds the server need not wait for (it still waits for the
 * whole namespace to be gone before it reuses anything). If the signal
 * cannot be queued, pid 1 learns the status from wait(2), later. */
static void report_exit(int status) {
    union sigval v = {.sival_int = status & 0xff};
    syscall(SYS_close_range, 0, 2, 0);
    sigqueue(1, REPORT_SIG, v);
    _exit(status & 0xff);
}

/* exec_program replaces the run's process with argv[0], as a cold run
 * starts its program: pid 2, every signal at its default and none blocked
 * (Python ignores SIGPIPE and SIGXFSZ, and an exec keeps what is ignored).
 * It never returns. */
static void exec_program(struct request *q) {
    struct sigaction dfl;
    sigset_t none;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* SIGKILL, SIGSTOP and glibc's own fail: fine */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execve(q->argv[0], q->argv, q->envp);
    int e = errno;
    dprintf(2, "%s: %s\n", q->argv[0], strerror(e));
    report_exit(e == EACCES || e == ENOEXEC ? 126 : 127);
}

/* child_main parks the run's process until its request comes, enters it,
 * reports "started" and lets go of the server's socket. For a program it
 * never returns; for Python code it returns the length of argv as
 * NUL-separated bytes at *args. */
static long child_main(char **args) {
    int fds[4];
    size_t len;
    struct request q;
    if (send_frame(child_sock, "{\"ready\":true}") != 0)
        _exit(125);
    unsigned char *body = recv_request(fds, &len);
    memset(&q, 0, sizeof q);
    child_enter(&q, fds, body, len);
    /* argv and env are copies: the body (a compiled program can be
     * megabytes) must not count against the run's memory. */
    free(body);
    if (send_frame(child_sock, "{\"started\":true}") != 0)
        _exit(125);
    /* pid 1 keeps the socket for the exit report: the code never sees it. */
    close(child_sock);
    child_sock = -1;
    if (q.exec)
        exec_program(&q);
    *args = q.args;
    return (long)q.args_len;
}

/* ---- exported to zygote.py ---- */

/* zy_init keeps what every child needs: the control socket, the
 * template's own pid namespace, the pool's disk size and environment
 * (NUL-separated), the seccomp programs (raw sock_filter arrays), and the
 * reaper program (opened: the run's process unmounts the template's /tmp
 * while pid 1 may still be about to exec it). */
int zy_init(int ctrl, long disk, const char *env, size_t env_len, const unsigned char *const *progs, const size_t *lens,
            int n, const char *reaper) {
    if (n > MAX_FILTERS)
        return -E2BIG;
    reaper_fd = open(reaper, O_RDONLY | O_CLOEXEC);
    if (reaper_fd < 0)
        return -errno;
    ctrl_fd = ctrl;
    pool_disk = disk;
    own_pidns = open("/proc/self/ns/pid", O_RDONLY | O_CLOEXEC);
    if (own_pidns < 0)
        return -errno;
    pool_env = malloc(env_len ? env_len : 1);
    if (pool_env == NULL)
        return -ENOMEM;
    memcpy(pool_env, env, env_len);
    pool_env_len = env_len;
    for (int i = 0; i < n; i++) {
        if (lens[i] % sizeof(struct sock_filter) != 0 || lens[i] / sizeof(struct sock_filter) > USHRT_MAX)
            return -EINVAL;
        void *p = malloc(lens[i]);
        if (p == NULL)
            return -ENOMEM;
        memcpy(p, progs[i], lens[i]);
        filters[i].len = (unsigned short)(lens[i] / sizeof(struct sock_filter));
        filters[i].filter = p;
    }
    nfilters = n;
    return 0;
}

/* zy_pin pins the template's pages at the n page-aligned addresses (the
 * pages a child running Python writes first, learned by a probe child):
 * fork copies a pinned page into the child at once instead of sharing it
 * copy-on-write, and a copy made at fork costs a fraction of a
 * copy-on-write fault here (no fault, no TLB flush: ~9 against ~17-40 us
 * per page on a paravirtualised VM). io_uring's registered buffers are
 * the kernel's interface for pinning; the ring is never used otherwise,
 * and no child keeps its descriptor. Returns the number of pages pinned
 * or a negative errno. */
int zy_pin(const uint64_t *pages, int n) {
    struct io_uring_params params;
    struct iovec *iov = calloc((size_t)(n > 0 ? n : 1), sizeof *iov);
    int k = 0;
    if (iov == NULL)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        if (k > 0 && (uint64_t)(uintptr_t)iov[k - 1].iov_base + iov[k - 1].iov_len == pages[i]) {
            iov[k - 1].iov_len += 4096;
            continue;
        }
        iov[k].iov_base = (void *)(uintptr_t)pages[i];
        iov[k].iov_len = 4096;
        k++;
    }
    memset(&params, 0, sizeof params);
    int ring = (int)syscall(__NR_io_uring_setup, 1, &params);
    if (ring < 0) {
        free(iov);
        return -errno;
    }
    /* The ring stays open (close-on-exec; children close it) for as long
     * as the template lives: closing it would unpin. */
    fcntl(ring, F_SETFD, FD_CLOEXEC);
    if (syscall(__NR_io_uring_register, ring, IORING_REGISTER_BUFFERS, iov, k) < 0) {
        int e = errno;
        close(ring);
        free(iov);
        return -e;
    }
    pin_ring = ring;
    free(iov);
    return n;
}

/* zy_owned reports whether fd is one of the helper's own descriptors
 * (see audit_descriptors in zygote.py). */
int zy_owned(int fd) {
    return fd >= 0 && (fd == ctrl_fd || fd == own_pidns || fd == reaper_fd || fd == pin_ring);
}

/* zy_report ends a run's process running Python code (see report_exit). */
void zy_report(int status) {
    report_exit(status);
}

/* zy_fork forks (for the template's probe child). */
int zy_fork(void) {
    return fork();
}

/* zy_add_mt registers a Mersenne Twister state of the template (624
 * words at key, the position at pos) for reseed; the template has checked
 * both addresses against the generator's own account of its state. */
int zy_add_mt(void *key, void *pos) {
    if (nmts >= MAX_MT)
        return -E2BIG;
    mts[nmts].key = key;
    mts[nmts].pos = pos;
    nmts++;
    return 0;
}

static void ctrl_send(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        send(ctrl_fd, buf, (size_t)(n < (int)sizeof buf ? n : (int)sizeof buf - 1), MSG_NOSIGNAL);
}

/* fork_run makes a run's two processes (see zy_serve) and returns pid 1's
 * pid (or -1) in the template, 0 in pid 2. pid 1 is the vfork child: it
 * shares the template's memory until it execs the reaper and never
 * returns here; its descriptor table is its own, so fd 3 becomes the
 * socket. Kept apart from zy_serve so that nothing of the loop's state
 * lives in a frame the vfork child runs in. */
static __attribute__((noinline)) pid_t fork_run(int sock) {
    pid_t pid = vfork();
    if (pid != 0)
        return pid;
    if (dup2(sock, 3) < 0 || unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) != 0)
        _exit(125);
    pid_t run = _Fork();
    if (run == 0)
        return 0;
    if (run > 0) {
        static char *const argv[] = {"codeexec-sandbox-init", NULL}, *const envp[] = {NULL};
        syscall(SYS_execveat, reaper_fd, "", argv, envp, AT_EMPTY_PATH);
    }
    _exit(125);
}

/* zy_serve is the template's loop: it forks a child per request of the
 * server and reports each child's exit. It returns 0 when the server
 * closes the control socket and a negative errno on a fatal error. In a
 * child it returns only to run Python code: isolated, the request
 * entered, privileges dropped, with the code's argv as NUL-separated
 * bytes at *args and their length as the result. */
long zy_serve(char **args) {
    struct pollfd pfd[MAX_CHILDREN + 1];
    pid_t pids[MAX_CHILDREN + 1];
    int n = 1;
    pfd[0].fd = ctrl_fd;
    pfd[0].events = POLLIN;
    for (;;) {
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (int i = n - 1; i >= 1; i--) {
            if (!pfd[i].revents)
                continue;
            int st = 0;
            while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
                ;
            close(pfd[i].fd);
            ctrl_send("{\"exit\":%d,\"status\":%u}", (int)pids[i], (unsigned)st);
            pfd[i] = pfd[n - 1];
            pids[i] = pids[n - 1];
            n--;
        }
        if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        char msg[256];
        char cbuf[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {msg, sizeof msg};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
        ssize_t got = recvmsg(ctrl_fd, &mh, MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return 0; /* the server closed the pool */
        int sock = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        if (c != NULL && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&sock, CMSG_DATA(c), sizeof sock);
        if (sock < 0) {
            ctrl_send("{\"error\":\"fork without a socket\"}");
            continue;
        }
        if (n > MAX_CHILDREN) {
            close(sock);
            ctrl_send("{\"error\":\"too many children\"}");
            continue;
        }
        /* A run is two processes in a fresh pid namespace, as under a
         * cold run's init: pid 1 runs reaper.c (it reaps, holds the
         * socket and reports the exit status), pid 2 is a copy of this
         * template that enters the request and runs the code (fork_run).
         * Only pid 2 copies this address space (and gets the pinned pages
         * copied at fork). Reset the namespace for children to ours, then
         * unshare a new one. */
        if (setns(own_pidns, CLONE_NEWPID) != 0 || unshare(CLONE_NEWPID) != 0) {
            close(sock);
            ctrl_send("{\"error\":\"pid namespace: %s\"}", strerror(errno));
            continue;
        }
        pid_t pid = fork_run(sock);
        if (pid < 0) {
            close(sock);
            ctrl_send("{\"error\":\"fork: %s\"}", strerror(errno));
            continue;
        }
        if (pid == 0) {
            /* pid 2: keep only stdio and the socket. */
            child_sock = 3;
            fcntl(3, F_SETFD, FD_CLOEXEC);
            syscall(SYS_close_range, 4, ~0U, 0);
            child_setup();
            reseed();
            return child_main(args);
        }
        close(sock);
        int pfdfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pfdfd < 0) {
            /* Cannot watch it: kill it, and the server sees it die. */
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
            ctrl_send("{\"error\":\"pidfd_open: %s\"}", strerror(errno));
            continue;
        }
        pfd[n].fd = pfdfd;
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        pids[n] = pid;
        n++;
        ctrl_send("{\"forked\":%d}", (int)pid);
    }
}
