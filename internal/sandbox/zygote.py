# The warm Python template ("zygote") of codeexec's Linux sandbox.
#
# It runs as root of a sandbox's user namespace, inside the read-only root
# the sandbox init built, with the data stack already imported. For each
# "fork" from the server it forks a child that is pid 1 of a fresh pid
# namespace, enters fresh mount, ipc and uts namespaces, rebuilds /proc,
# /dev/pts and (per request) /tmp, /dev/shm and /mnt/data, then parks. The
# server moves the parked child into its own cgroup and, when a request
# comes, sends it the code: the child drops to uid 1000, sets rlimits,
# no_new_privs and the server's seccomp programs, and runs the code with a
# fresh __main__ (or, for any other program, spawns it and reaps for it).
# A child serves one execution; the template never runs code. Nothing here
# may hold a secret: children get a copy of this memory.
#
# Children stay in the template's network namespace: it has no interface up
# (not even lo), the seccomp programs allow AF_UNIX sockets only, and the
# server runs one child of a template at a time and only after the previous
# one's whole pid namespace is gone, so a run finds no socket of another.
# A fresh one per run would cost ~18 ms of kernel CPU to tear down.
#
# Every page a child writes is a copy-on-write fault (~15-50 us each on a
# paravirtualised VM): the per-child work below is kept to what must differ
# per run, and the rest is done once in the template.
#
# fd 3: SOCK_SEQPACKET to the server (JSON messages; "fork" carries the
# child's own socket as SCM_RIGHTS).

import base64
import ctypes
import errno
import gc
import io
import json
import os
import resource
import select
import signal
import socket
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2
MOVE_MOUNT_F_EMPTY_PATH = 4
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 24, 38, 22
SECCOMP_MODE_FILTER = 2
SYS_MOVE_MOUNT = {"x86_64": 429, "aarch64": 429}
SANDBOX_UID = 1000
PROC_MASKED = ("kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger", "kallsyms")

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.syscall.restype = ctypes.c_long


def _check(r, what):
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None
    _check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), "mount " + dst)


def umount(path):
    r = libc.umount2(path.encode(), MNT_DETACH)
    if r != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(r, "umount " + path)


def prctl(op, a=0, b=0, c=0, d=0):
    return libc.prctl(op, a, b, c, d)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def make_filter(prog):
    """A sock_fprog built once in the template (kept alive with its buffer)."""
    buf = ctypes.create_string_buffer(prog, len(prog))
    return buf, SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))


def load_filter(filt):
    _check(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(filt[1])), "seccomp")


def inodes_for(size):
    return max(size // 4096, 1024)


def frame(obj):
    b = json.dumps(obj).encode()
    return struct.pack(">I", len(b)) + b


def send_frame(sock, obj):
    sock.sendall(frame(obj))


def recv_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError("server closed the socket")
        out += chunk
    return out


# ---- the child: one execution ----

def scratch_opts(disk):
    return "size=%d,nr_inodes=%d,mode=1777" % (disk, inodes_for(disk))


def child_setup(cfg):
    """Fresh namespaces and mounts, and every step that does not depend on
    the request: runs before the child parks."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    _check(libc.sethostname(b"sandbox", 7), "sethostname")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # The template's own /proc (its pid namespace), /tmp (this script),
    # /dev/shm, /dev/pts and /mnt/data are dropped, not shared.
    # A user namespace may mount a proc only while one is visible: mount
    # the new one aside, drop the template's, move the new one in place.
    mount("proc", "/tmp", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    umount("/proc")
    mount("/tmp", "/proc", None, MS_MOVE)
    for p in ("/tmp", "/dev/shm", "/dev/pts", "/mnt/data"):
        umount(p)
    for name in PROC_MASKED:
        p = "/proc/" + name
        if os.path.lexists(p):
            mount("/dev/null", p, None, MS_BIND)
            mount(None, p, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    mount("/proc/sys", "/proc/sys", None, MS_BIND | MS_REC)
    mount(None, "/proc/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620")
    # /tmp and /dev/shm sized for the server's disk limit; a request with
    # another limit remounts them.
    opts = scratch_opts(cfg["disk"])
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
    mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    # The bounding set only limits what an exec can grant: the effective
    # capabilities the request steps need stay until the uid change.
    for cap in range(64):
        if prctl(PR_CAPBSET_DROP, cap) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                break
            _check(-1, "drop capability %d" % cap)


def mkdir_owned(d):
    if d == "/tmp":
        return
    mkdir_owned(os.path.dirname(d))
    try:
        os.mkdir(d, 0o755)
    except FileExistsError:
        return
    os.lchown(d, SANDBOX_UID, SANDBOX_UID)


def write_files(files):
    for f in files:
        p = f["Path"]
        if os.path.normpath(p) != p or not p.startswith("/tmp/"):
            raise ValueError("bad file path %r" % p)
        mkdir_owned(os.path.dirname(p))
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            data = base64.b64decode(f.get("Data") or "")
            while data:
                data = data[os.write(fd, data):]
            os.fchown(fd, SANDBOX_UID, SANDBOX_UID)
            os.fchmod(fd, (f.get("Mode") or 0o644) & 0o777)
        finally:
            os.close(fd)


def child_enter(req, fds, cfg, filters):
    """Per request: scratch size, workdir, files, then privileges dropped."""
    wd, stdin, stdout, stderr = fds
    if req["disk"] != cfg["disk"]:
        opts = scratch_opts(req["disk"])
        mount(None, "/tmp", None, MS_REMOUNT | MS_NOSUID | MS_NODEV, opts)
        mount(None, "/dev/shm", None, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
    _check(libc.syscall(SYS_MOVE_MOUNT.get(os.uname().machine, 429), wd, b"", -100, b"/mnt/data",
                        MOVE_MOUNT_F_EMPTY_PATH), "move_mount /mnt/data")
    os.close(wd)
    write_files(req["files"])
    os.umask(0o022)
    for i, fd in enumerate((stdin, stdout, stderr)):
        os.dup2(fd, i)
        os.close(fd)
    os.chdir("/mnt/data")
    resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
    resource.setrlimit(resource.RLIMIT_CPU, (req["cpu_secs"], req["cpu_secs"] + 1))
    os.setgroups([])
    os.setresgid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    os.setresuid(SANDBOX_UID, SANDBOX_UID, SANDBOX_UID)
    _check(prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs")
    for filt in filters:
        load_filter(filt)
    os.setsid()


def template_prepare(cfg):
    """Once, after the preload: the state every child starts from. Objects
    made here are pristine in each child (its own copy), and nothing a
    child does reaches the template."""
    import builtins, importlib, linecache, types
    for p in list(sys.path_importer_cache):
        if p in ("/mnt/data", "/tmp") or p.startswith("/tmp/"):
            del sys.path_importer_cache[p]
    importlib.invalidate_caches()
    linecache.clearcache()
    # Exactly the environment of the runs the pool serves: the template's
    # own has extra variables for its imports.
    os.environ.clear()
    for kv in cfg["env"]:
        k, _, v = kv.partition("=")
        os.environ[k] = v
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    main.__cached__ = None
    stdio = (
        io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "rb", closefd=False)), encoding="utf-8"),
        io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), encoding="utf-8", write_through=True),
        io.TextIOWrapper(io.FileIO(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace",
                         write_through=True),
    )
    return main, stdio


def child_prepare():
    """Per child, while it is parked: fresh randomness (the template's
    generator states would otherwise be every child's). numpy's legacy
    seeding from 128 random bits touches a third of the pages its default
    seeding does."""
    import random
    random.seed(os.urandom(32))
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(list(struct.unpack("4I", os.urandom(16))))


def run_program(req, sock):
    """Runs a program (argv[0], absolute) as a cold run would: as pid 2,
    spawned without copying this address space, with the signal
    dispositions a fresh process has, while this process, pid 1, reaps
    every process the namespace orphans. Reports the program's status
    early (see run_code); never returns."""
    # Python ignores SIGPIPE and SIGXFSZ at start-up and an exec keeps
    # ignored signals ignored: the program gets the defaults back. pid 1
    # ignores SIGINT so that nothing in the sandbox can break its wait.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    argv = req["argv"]
    env = dict(kv.partition("=")[::2] for kv in req["env"])
    try:
        pid = os.posix_spawn(argv[0], argv, env,
                             setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT))
    except OSError as e:
        os.write(2, ("%s: %s\n" % (argv[0], e.strerror)).encode())
        report_exit(sock, {"exit": 126 if e.errno in (errno.EACCES, errno.ENOEXEC) else 127})
    os.closerange(0, 3)
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            report_exit(sock, {"exit": 125})
        except BaseException:
            continue
        if wpid == pid:
            break
    if os.WIFSIGNALED(status):
        report_exit(sock, {"signal": os.WTERMSIG(status)})
    report_exit(sock, {"exit": os.WEXITSTATUS(status)})


def report_exit(sock, status):
    """Tells the server how the run ended, then exits: tearing down this
    copy of the template's address space takes milliseconds the server
    need not wait for (it still waits for the whole namespace to be gone
    before it reuses anything). The code could forge this report, but no
    better than it could exit with any status itself; the server kills the
    namespace on receipt either way."""
    try:
        os.closerange(0, 3)
        sock.sendall(frame(status))
    except BaseException:
        pass
    os._exit(status.get("exit", 0) & 0xFF)


def run_code(req, main, stdio, sock):
    """Runs the code as `python3 -u src args...` would; never returns."""
    argv = req["argv"]
    src = argv[2]
    sys.argv = argv[2:]
    sys.path[0] = os.path.dirname(src)
    sys.stdin, sys.stdout, sys.stderr = stdio
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = stdio
    main.__file__ = src
    sys.modules["__main__"] = main
    gc.enable()
    status = 0
    try:
        with open(src, "rb") as f:
            source = f.read()
        code = compile(source, src, "exec")
    except BaseException as e:
        sys.excepthook(type(e), e, None)
        status = 1
    else:
        try:
            exec(code, main.__dict__)
        except SystemExit as e:
            status = exit_status(e)
        except BaseException as e:
            # Drop this frame: the traceback starts in the user's module.
            if e.__traceback__ is not None:
                e.__traceback__ = e.__traceback__.tb_next
            sys.excepthook(type(e), e, e.__traceback__)
            status = 1
    try:
        import threading
        threading._shutdown()
    except BaseException:
        pass
    try:
        import atexit
        atexit._run_exitfuncs()
    except SystemExit as e:
        status = exit_status(e)
    except BaseException:
        pass
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass
    report_exit(sock, {"exit": status & 0xFF})


def exit_status(e):
    c = e.code
    if c is None:
        return 0
    if isinstance(c, int):
        return c
    try:
        print(c, file=sys.stderr)
    except BaseException:
        pass
    return 1


def child_main(sock, cfg, filters, main, stdio):
    os.set_inheritable(sock.fileno(), False)
    try:
        child_setup(cfg)
        child_prepare()
        send_frame(sock, {"ready": True})
        head = socket.recv_fds(sock, 4, 4)
        data, fds = head[0], head[1]
        if len(data) == 0:
            os._exit(0)  # the pool is shutting down
        data += recv_exact(sock, 4 - len(data)) if len(data) < 4 else b""
        (n,) = struct.unpack(">I", data)
        req = json.loads(recv_exact(sock, n))
        if len(fds) != 4:
            raise ValueError("expected 4 descriptors, got %d" % len(fds))
        if not req.get("exec") and req["env"] != cfg["env"]:
            raise ValueError("the request's environment is not the pool's")
        child_enter(req, fds, cfg, filters)
        send_frame(sock, {"started": True})
    except BaseException as e:
        try:
            send_frame(sock, {"error": "%s: %s" % (type(e).__name__, e)})
        finally:
            os._exit(125)
    # The socket stays open (close-on-exec) for the exit report.
    if req.get("exec"):
        run_program(req, sock)
    run_code(req, main, stdio, sock)


# ---- the template ----

def main():
    ctrl = socket.socket(fileno=3)
    os.set_inheritable(3, False)
    with open("/tmp/.zygote/config.json") as f:
        cfg = json.load(f)
    filters = [make_filter(base64.b64decode(p)) for p in cfg["seccomp"]]
    own_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    preload_err = ""
    try:
        exec(compile(cfg.get("preload", ""), "<preload>", "exec"), {"__name__": "__preload__"})
    except BaseException as e:
        preload_err = "%s: %s" % (type(e).__name__, e)
    # Everything imported so far stays out of the collector's reach: a
    # collection in a child would otherwise touch (and copy) every page.
    main, stdio = template_prepare(cfg)
    gc.collect()
    gc.freeze()
    gc.disable()
    threads = len(os.listdir("/proc/self/task"))
    ctrl.send(json.dumps({"ready": True, "threads": threads, "preload_error": preload_err,
                          "stdlib": sorted(getattr(sys, "stdlib_module_names", ()))}).encode())
    if threads != 1:
        return 1  # forking a multi-threaded process is unsafe: refuse to serve
    children = {}  # pidfd -> pid
    while True:
        readable, _, _ = select.select([ctrl] + list(children), [], [])
        for r in readable:
            if r is ctrl:
                try:
                    msg, fds, _, _ = socket.recv_fds(ctrl, 4096, 1)
                except OSError:
                    return 0
                if not msg:
                    return 0  # the server closed the pool
                if len(fds) != 1:
                    for fd in fds:
                        os.close(fd)
                    ctrl.send(json.dumps({"error": "fork without a socket"}).encode())
                    continue
                # Each child is pid 1 of a fresh pid namespace: reset the
                # namespace for children to ours, then unshare a new one.
                _check(libc.setns(own_pidns, CLONE_NEWPID), "setns pid")
                _check(libc.unshare(CLONE_NEWPID), "unshare pid")
                gc.freeze()
                # libc's fork, not os.fork: Python's after-fork work in the
                # child (re-initialising locks no other thread can hold in
                # this single-threaded process, at-fork hooks of the
                # imported modules) costs ~250 copy-on-write faults, ~7 ms
                # of CPU per child here. The child reseeds its generators
                # itself (child_prepare).
                pid = libc.fork()
                if pid < 0:
                    ctrl.send(json.dumps({"error": "fork: %s" % os.strerror(ctypes.get_errno())}).encode())
                    os.close(fds[0])
                    continue
                if pid == 0:
                    sock = socket.socket(fileno=fds[0])
                    keep = sock.fileno()
                    os.closerange(3, keep)
                    os.closerange(keep + 1, 1 << 16)
                    child_main(sock, cfg, filters, main, stdio)
                    os._exit(125)
                os.close(fds[0])
                children[os.pidfd_open(pid)] = pid
                ctrl.send(json.dumps({"forked": pid}).encode())
            else:
                pid = children.pop(r)
                _, status = os.waitpid(pid, 0)
                os.close(r)
                ctrl.send(json.dumps({"exit": pid, "status": status}).encode())


if __name__ == "__main__":
    sys.exit(main())
