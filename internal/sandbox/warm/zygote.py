# The warm Python template ("zygote") of codeexec's Linux sandbox.
#
# It runs as root of a sandbox's user namespace, inside the read-only root
# the sandbox init built, with the data stack already imported. Its fork
# loop and each run's setup are native code (zygote/zygote.c, compiled by
# the server, loaded here with ctypes): for each "fork" from the server it
# makes a run's two processes in a fresh pid namespace, as a cold run has
# them: pid 1 runs a small reaper program (zygote/reaper.c) that holds the
# server's socket, and pid 2 is a copy of this template that enters fresh
# mount, ipc and uts namespaces, rebuilds /proc, /dev/pts, /tmp and
# /dev/shm, and parks. The server moves both into the run's cgroup and,
# when a request comes, sends pid 2 the code: the native code mounts the
# workdir, writes the files, drops to uid 1000, sets rlimits, no_new_privs
# and the server's seccomp programs, lets go of the socket, and either
# execs a program or returns here to run Python code with fresh random
# generators and a fresh __main__. A child serves one execution; the
# template never runs code. Nothing here may hold a secret: children get a
# copy of this memory.
#
# A run must not tell it was forked: after the preload the template
# releases what imported modules keep open (matplotlib's font files), and
# it checks that it holds no descriptor but its own and no second thread
# (audit_descriptors): a child closes every descriptor it did not open,
# and an object whose file vanished under it breaks in the user's code.
#
# Children stay in the template's network namespace: it has no interface up
# (not even lo), the seccomp programs allow AF_UNIX sockets only, and the
# server runs one child of a template at a time and only after the previous
# one's whole pid namespace is gone, so a run finds no socket of another.
# A fresh one per run would cost ~18 ms of kernel CPU to tear down.
#
# Every page a child touches is a fault (~5 us to read, ~20 us to write a
# page on a paravirtualised VM), and Python writes the reference count of
# every object it uses: what a child does in Python is kept to what must
# be Python (reseeding, running the code), and the rest is done once here
# in the template or natively.
#
# fd 3: SOCK_SEQPACKET to the server (see zygote.c for the protocol).

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
import struct
import sys
import time
from importlib.machinery import SourceFileLoader

HELPER = "/tmp/.zygote/zygote.so"
REAPER = "/tmp/.zygote/reaper"


def template_prepare(cfg):
    """Once, after the preload: the state every child starts from. Objects
    made here are pristine in each child (its own copy), and nothing a
    child does reaches the template."""
    import builtins, importlib, linecache, types
    # What every child uses anyway (its reseeding, the interpreter's
    # shutdown steps): imported here, not unmarshalled again per child.
    import atexit, random, threading  # noqa: F401
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
    # As `python3 -u` makes them (Python/pylifecycle.c, create_stdio):
    # stdin buffered, stdout and stderr raw, write-through text layers,
    # the locale's encoding and error handlers, "<stdin>" names.
    enc = sys.stdout.encoding if sys.stdout else "utf-8"
    errors = sys.stdout.errors if sys.stdout else "strict"
    stdio = []
    for fd, name, mode in ((0, "<stdin>", "r"), (1, "<stdout>", "w"), (2, "<stderr>", "w")):
        raw = io.FileIO(fd, mode + "b", closefd=False)
        raw.name = name
        buf = io.BufferedReader(raw) if fd == 0 else raw
        text = io.TextIOWrapper(buf, encoding=enc, errors="backslashreplace" if fd == 2 else errors,
                                newline="\n", line_buffering=False, write_through=True)
        text.mode = mode
        stdio.append(text)
    return main, tuple(stdio)


def locate_mt(obj, key, pos, pos_first):
    """The addresses of a Mersenne Twister's 624 state words and position
    inside obj's own memory, found by the values the generator reports;
    None unless they occur exactly once."""
    words = struct.pack("=624I", *key)
    want = struct.pack("=i", pos) + words if pos_first else words + struct.pack("=i", pos)
    mem = ctypes.string_at(id(obj), sys.getsizeof(obj))
    off = mem.find(want)
    if off < 0 or mem.find(want, off + 1) >= 0:
        return None
    if pos_first:
        return id(obj) + off + 4, id(obj) + off
    return id(obj) + off, id(obj) + off + len(words)


def prepare_reseed(lib):
    """Every child needs fresh random generators (the template's states
    would otherwise be every child's). Reseeding in Python costs a child
    ~40 (random) and ~250 (numpy) copy-on-write faults, ~1 and ~10 ms
    here; so the native code overwrites the generators' states with
    kernel randomness while the child is parked, at addresses found and
    checked here. A generator not found that way is reseeded in Python
    before the code runs. Returns those (name, reseeding function)."""
    import random
    fallback = []
    random.seed()  # also clears the cached second Gaussian
    inst = getattr(random, "_inst", None)
    try:
        _, internal, _ = inst.getstate()
        at = locate_mt(inst, internal[:624], internal[624], True)
    except Exception:
        at = None
    if at is None or lib.zy_add_mt(at[0], at[1]) != 0:
        fallback.append(("random", lambda: random.seed(int.from_bytes(os.urandom(32), "big"))))
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            np.random.seed()  # clears the cached Gaussian too
            bg = np.random.mtrand._rand._bit_generator
            st = bg.state["state"]
            at = locate_mt(bg, [int(x) for x in st["key"]], int(st["pos"]), False)
        except Exception:
            at = None
        if at is None or lib.zy_add_mt(at[0], at[1]) != 0:
            # numpy's legacy seeding from 128 random bits touches a third
            # of the pages its default seeding does.
            fallback.append(("numpy", lambda: np.random.seed(list(struct.unpack("4I", os.urandom(16))))))
    return fallback


def run_code(argv, main, stdio, reseed):
    """Runs the code as `python3 -u src args...` would; returns the exit
    status."""
    for _, f in reseed:
        f()
    src = argv[2]
    sys.argv = argv[2:]
    sys.orig_argv = list(argv)
    sys.path[0] = os.path.dirname(src)
    sys.stdin, sys.stdout, sys.stderr = stdio
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = stdio
    main.__file__ = src
    main.__loader__ = SourceFileLoader("__main__", src)
    sys.modules["__main__"] = main
    gc.enable()
    status = 0
    try:
        with open(src, "rb") as f:
            source = f.read()
        code = compile(source, src, "exec")
    except BaseException as e:
        e.__traceback__ = None  # as the interpreter reports it: no frame of ours
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
    return status & 0xFF


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


def load_helper(cfg):
    lib = ctypes.CDLL(HELPER)
    lib.zy_init.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_char_p, ctypes.c_size_t,
                            ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t), ctypes.c_int,
                            ctypes.c_char_p]
    lib.zy_serve.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
    lib.zy_serve.restype = ctypes.c_long
    lib.zy_add_mt.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.zy_pin.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]
    lib.zy_fork.argtypes = []
    lib.zy_report.argtypes = [ctypes.c_int]
    lib.zy_owned.argtypes = [ctypes.c_int]
    progs = [base64.b64decode(p) for p in cfg["seccomp"]]
    env = b"".join(kv.encode() + b"\0" for kv in cfg["env"])
    n = len(progs)
    r = lib.zy_init(3, cfg["disk"], env, len(env), (ctypes.c_char_p * max(n, 1))(*progs),
                    (ctypes.c_size_t * max(n, 1))(*[len(p) for p in progs]), n, REAPER.encode())
    if r != 0:
        raise OSError(-r, "zy_init: " + os.strerror(-r))
    return lib


# ---- learning what a child writes ----

PROBE = "/tmp/.zygote/probe.py"
PROBE_CODE = """\
import os, sys
values = {"n": [i * i for i in range(50)], "s": "%s-%d" % ("x", 1)}
try:
    values["q"] = 1 / 0
except ZeroDivisionError as e:
    values["e"] = str(e)
print(1, len(values), f"{sum(values['n'])}", file=sys.stdout)
"""
# With the data stack preloaded, the probe also takes its common paths.
PROBE_DATA_CODE = """\
import numpy, pandas
a = numpy.arange(12)
df = pandas.DataFrame({"a": a, "b": a * 0.5})
print(df.a.sum(), df["b"].mean(), df.shape, a.reshape(3, 4).sum(axis=0))
"""
MAX_PINNED = 2048  # pages; io_uring accounts them against RLIMIT_MEMLOCK


def private_writable():
    """(start, end) of this process's private writable mappings."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if parts[1].startswith("rw") and parts[1][3] == "p":
                a, b = parts[0].split("-")
                out.append((int(a, 16), int(b, 16)))
    return out


def pages_where(regions, want):
    """The page addresses in regions whose pagemap entry has all bits of
    want (bit 63: present, 56: mapped by this process only)."""
    out = []
    with open("/proc/self/pagemap", "rb") as f:
        for a, b in regions:
            f.seek((a // 4096) * 8)
            data = f.read((b - a) // 4096 * 8)
            for i, (e,) in enumerate(struct.iter_unpack("=Q", data)):
                if e & want == want:
                    out.append(a + i * 4096)
    return out


def learn_and_pin(lib, main, stdio, reseed):
    """Runs a small program in a forked probe child as a run's code runs,
    and pins the template's pages that child had to copy (see zy_pin).
    Every later child gets those pages copied at fork instead of faulting
    on each. The probe is the template's own code, not a run's. Returns
    the number of pages pinned (negative: an errno)."""
    with open(PROBE, "w") as f:
        f.write(PROBE_CODE)
        if "pandas" in sys.modules and "numpy" in sys.modules:
            f.write(PROBE_DATA_CODE)
    regions = private_writable()
    r, w = os.pipe()
    pid = lib.zy_fork()
    if pid == 0:
        try:
            os.close(r)
            null = os.open("/dev/null", os.O_RDWR)
            for i in range(3):
                os.dup2(null, i)
            run_code(["python3", "-u", PROBE], main, stdio, reseed)
            written = pages_where(regions, 1 << 63 | 1 << 56)
            os.write(w, struct.pack("=%dQ" % len(written), *written))
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    deadline = time.monotonic() + 60
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)  # a stuck probe: serve unpinned
            chunks = []
            break
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    os.unlink(PROBE)
    data = b"".join(chunks)
    written = set(x for (x,) in struct.iter_unpack("=Q", data[:len(data) // 8 * 8]))
    # Only pages the template has: the probe's new pages were never shared.
    # io_uring counts pinned pages against RLIMIT_MEMLOCK (the soft limit
    # may be raised to the hard one).
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    limit = MAX_PINNED if soft == resource.RLIM_INFINITY else min(MAX_PINNED, soft // 4096 - 16)
    pages = sorted(written.intersection(pages_where(regions, 1 << 63)))
    if not pages:
        return 0
    if limit <= 0:
        return -errno.ENOMEM
    pages = pages[:limit]
    return lib.zy_pin((ctypes.c_uint64 * len(pages))(*pages), len(pages))


# ---- what the template may hold ----

def release_held_files():
    """Closes the files the preloaded modules keep open, by dropping the
    objects that own them: a child would otherwise find them closed
    (it keeps no descriptor it did not open), and their owners would fail
    in the user's code. Each module that is reopened lazily is listed
    here; audit_descriptors catches the ones that are not."""
    fm = sys.modules.get("matplotlib.font_manager")
    if fm is not None:
        # FT2Font objects, cached per font file, each with the file open.
        getattr(getattr(fm, "_get_font", None), "cache_clear", lambda: None)()
    gc.collect()


def audit_descriptors(lib):
    """The descriptors this process holds beyond stdio and the helper's
    own (control socket, pid namespace, reaper, pinning ring), as
    "fd -> target": each would be closed under its owner in a child."""
    out = []
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        fd = int(name)
        if fd <= 2 or lib.zy_owned(fd):
            continue
        try:
            target = os.readlink("/proc/self/fd/" + name)
        except OSError:
            continue  # the listing's own descriptor, closed by now
        out.append("%d -> %s" % (fd, target))
    return out


# ---- the template ----

def main():
    os.set_inheritable(3, False)
    with open("/tmp/.zygote/config.json") as f:
        cfg = json.load(f)
    lib = load_helper(cfg)
    preload_err = ""
    try:
        exec(compile(cfg.get("preload", ""), "<preload>", "exec"), {"__name__": "__preload__"})
    except BaseException as e:
        preload_err = "%s: %s" % (type(e).__name__, e)
    # Everything imported so far stays out of the collector's reach: a
    # collection in a child would otherwise touch (and copy) every page.
    release_held_files()
    main, stdio = template_prepare(cfg)
    reseed = prepare_reseed(lib)
    args = ctypes.c_void_p()
    gc.collect()
    gc.freeze()
    gc.disable()
    pinned = learn_and_pin(lib, main, stdio, reseed)
    threads = len(os.listdir("/proc/self/task"))
    stray = audit_descriptors(lib)
    os.write(3, json.dumps({"ready": True, "threads": threads, "stray_fds": stray, "preload_error": preload_err,
                            "reseed_in_python": [name for name, _ in reseed], "pinned": pinned,
                            "stdlib": sorted(getattr(sys, "stdlib_module_names", ()))}).encode())
    if threads != 1 or stray:
        # Forking a multi-threaded process is unsafe, and a descriptor a
        # module holds would be closed under it in every child: refuse.
        return 1
    n = lib.zy_serve(ctypes.byref(args))
    if n == 0:
        return 0  # the server closed the pool
    if n < 0:
        print("zygote: %s" % os.strerror(-n), file=sys.stderr)
        return 1
    # A child with its request entered and its privileges dropped.
    argv = [os.fsdecode(a) for a in ctypes.string_at(args.value, n).split(b"\0")[:-1]]
    lib.zy_report(run_code(argv, main, stdio, reseed))


if __name__ == "__main__":
    sys.exit(main())
