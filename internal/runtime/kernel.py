# codeexec's stateful kernel: runs inside the session's sandbox, executes
# each call's code in one persistent namespace. It talks to the server over
# the Unix socket the server listens on in /mnt/data/.codeexec (one JSON line
# per request and per answer). Per call, fds 0-2 point at files under /tmp so
# that subprocesses' output is captured too.
import io, json, os, resource, signal, socket, subprocess, sys, time, traceback, types

SOCK = sys.argv[1]
CAP = int(sys.argv[2])

conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(SOCK)
rfile = conn.makefile("rb")
# The code gets a fresh __main__ module of its own: nothing it defines can
# reach the kernel's globals.
user_main = types.ModuleType("__main__")
user_main.__dict__["__builtins__"] = __builtins__
sys.modules["__main__"] = user_main
main = user_main.__dict__


class CellTimeout(KeyboardInterrupt):
    pass


def on_limit(signum, frame):
    raise CellTimeout("time limit exceeded")


signal.signal(signal.SIGALRM, on_limit)
signal.signal(signal.SIGXCPU, on_limit)


def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def read_capped(path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        data = f.read(CAP)
    return data.decode("utf-8", "replace"), size > CAP


def run(req):
    lang, code, args = req["lang"], req["code"], req.get("args") or []
    timeout = max(1, int(req.get("timeout_ms", 30000) // 1000))
    with open("/tmp/.ce-stdin", "wb") as f:
        f.write(req.get("stdin", "").encode())
    saved = [os.dup(0), os.dup(1), os.dup(2)]
    outs = [os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for p in ("/tmp/.ce-stdout", "/tmp/.ce-stderr")]
    sys.stdout.flush(); sys.stderr.flush()
    inp = os.open("/tmp/.ce-stdin", os.O_RDONLY)
    os.dup2(inp, 0); os.dup2(outs[0], 1); os.dup2(outs[1], 2)
    os.close(inp)
    os.chdir("/mnt/data")
    exit_code, status = 0, "ok"
    t0, c0 = time.monotonic(), cpu()
    soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_CPU, (min(hard, int(c0) + timeout + 1), hard))
    signal.alarm(timeout)
    try:
        if lang == "bash":
            p = subprocess.Popen(["/bin/bash", "-c", code, "bash"] + args, start_new_session=True)
            try:
                exit_code = p.wait()
            except BaseException:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise
        else:
            sys.argv = ["main.py"] + args
            sys.stdin = io.TextIOWrapper(os.fdopen(os.dup(0), "rb"))
            exec(compile(code, "<cell>", "exec"), main)
    except CellTimeout:
        status, exit_code = "timeout", 124
        traceback.print_exc()
    except SystemExit as e:
        exit_code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        exit_code = 1
        traceback.print_exc()
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        try:
            sys.stdout.flush(); sys.stderr.flush()
        except Exception:
            pass
        for i in range(3):
            os.dup2(saved[i], i)
            os.close(saved[i])
    if status == "ok" and exit_code != 0:
        status = "error"
    wall, used = time.monotonic() - t0, cpu() - c0
    out, o_cut = read_capped("/tmp/.ce-stdout")
    err, e_cut = read_capped("/tmp/.ce-stderr")
    for fd in outs:
        os.close(fd)
    if o_cut or e_cut:
        status = "output_limit"
    return {"id": req["id"], "stdout": out, "stderr": err, "exit_code": exit_code, "status": status,
            "wall_ms": int(wall * 1000), "cpu_ms": int(used * 1000)}


conn.sendall(b'{"ready":true}\n')
for line in rfile:
    answer = run(json.loads(line))
    conn.sendall(json.dumps(answer).encode() + b"\n")
