# codeexec's programmatic tool calling runner: the only step of a
# programmatic run. It connects to the server's Unix socket (placed in
# /mnt/data by the server, removed once connected), defines the request's
# tools and runs the code: Python in this process (top-level await allowed),
# Bash as a child whose tool functions reach this process through FIFOs.
# Each tool call becomes one JSON line to the server; the answer line resumes
# the code. The code's own stdout and stderr are never touched.
import ast, asyncio, inspect, json, os, select, socket, subprocess, sys, threading, time, traceback, types

CFG = json.load(open("/tmp/.ptc/config.json", encoding="utf-8"))
conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(CFG["sock"])


def send(msg):
    conn.sendall(json.dumps(msg, separators=(",", ":")).encode() + b"\n")


class Lines:
    """Splits the server's answers into JSON messages."""

    def __init__(self):
        self.buf = b""

    def feed(self):
        data = conn.recv(1 << 20)
        if not data:
            # The server ended the run (cancelled, timed out): nothing can resume.
            sys.stderr.flush()
            os._exit(137)
        self.buf += data
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            out.append(json.loads(line))
        return out


lines = Lines()


def decode(v):
    """A tool result that is a JSON document in a string reaches the code parsed."""
    if isinstance(v, str):
        t = v.strip()
        if t[:1] in ("{", "["):
            try:
                return json.loads(t)
            except ValueError:
                pass
    return v


class ToolError(Exception):
    """A tool the code called failed; the message is the tool's error."""


class Calls:
    """The calls of the running event loop: the calls made in the same few
    loop turns (asyncio.gather) go to the server as one batch."""

    def __init__(self):
        self.seq = 0
        self.batch = []
        self.waiting = {}
        self.loop = None

    async def call(self, name, args):
        body = json.loads(json.dumps(args))  # fails here, in the caller, when not JSON
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            self.loop = loop
            loop.add_reader(conn.fileno(), self.readable)
        self.seq += 1
        cid = str(self.seq)
        fut = loop.create_future()
        self.waiting[cid] = fut
        self.batch.append({"id": cid, "name": name, "input": body})
        if len(self.batch) == 1:
            loop.call_soon(self.flush, 0)
        return await fut

    def flush(self, turn):
        if turn < 3:  # let gathered siblings reach their own calls first
            self.loop.call_soon(self.flush, turn + 1)
            return
        batch, self.batch = self.batch, []
        send({"calls": batch})

    def readable(self):
        for msg in lines.feed():
            for r in msg.get("results", []):
                fut = self.waiting.pop(r.get("id"), None)
                if fut is None or fut.done():
                    continue
                if r.get("ok"):
                    fut.set_result(decode(r.get("result")))
                else:
                    fut.set_exception(ToolError(r.get("error") or "tool failed"))


calls = Calls()


def make_tool(ident, name):
    async def tool(*args, **kwargs):
        if args:
            raise TypeError(f"{ident}() takes keyword arguments only: await {ident}(arg=value)")
        return await calls.call(name, kwargs)

    tool.__name__ = tool.__qualname__ = ident
    return tool


def run_python():
    src = CFG["src"]
    with open(src, encoding="utf-8") as f:
        code = f.read()
    main = types.ModuleType("__main__")
    ns = main.__dict__
    ns["__builtins__"] = __builtins__
    ns["__file__"] = src
    ns["asyncio"] = asyncio
    for t in CFG["tools"]:
        ns[t["ident"]] = make_tool(t["ident"], t["name"])
    sys.modules["__main__"] = main
    sys.argv = [src] + (CFG.get("args") or [])
    status = 0
    try:
        co = compile(code, src, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        if co.co_flags & inspect.CO_COROUTINE:
            asyncio.run(eval(co, ns))
        else:
            exec(co, ns)
    except SystemExit as e:
        if isinstance(e.code, int) or e.code is None:
            status = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except BaseException as e:
        # Show the code's own frames only, as `python3 main.py` would.
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != src:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(status)


# One call: the argument goes to a file, the request (call name and tool
# index) to the broker's FIFO, the answer comes back through a FIFO of the
# call's own. Only mkfifo is a process of its own; the broker removes the
# files once the answer is on its way.
BASH_LIB = r"""
__codeexec_tool() {
  local __c=/tmp/.ptc/calls/c.$BASHPID.$SRANDOM __st __out __fd
  printf '%s' "${2-}" > "$__c.in" || return 70
  /usr/bin/mkfifo "$__c.out" || return 70
  printf '%s %s\n' "$__c" "$1" > /tmp/.ptc/req
  exec {__fd}<"$__c.out"
  IFS= read -r __st <&"$__fd"
  IFS= read -r -d '' __out <&"$__fd"
  exec {__fd}<&-
  if [[ $__st == ok ]]; then printf '%s' "$__out"; return 0; fi
  printf '%s' "$__out" >&2
  return 1
}
"""


def deliver(c, ok, payload):
    try:
        with open(c + ".out", "wb") as f:  # blocks until the function reads
            for p in (c + ".out", c + ".in"):
                os.unlink(p)
            f.write((b"ok\n" if ok else b"err\n") + payload)
    except OSError:
        pass


def bash_payload(r):
    if not r.get("ok"):
        return (r.get("error") or "tool failed").encode() + b"\n"
    v = decode(r.get("result"))
    if isinstance(v, str):
        return v.encode() + b"\n"
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "replace") + b"\n"


def run_bash():
    os.makedirs("/tmp/.ptc/calls", mode=0o700, exist_ok=True)
    os.mkfifo("/tmp/.ptc/req", 0o600)
    rfd = os.open("/tmp/.ptc/req", os.O_RDWR | os.O_NONBLOCK)
    tools = CFG["tools"]
    with open("/tmp/.ptc/tools.sh", "w", encoding="utf-8") as f:
        f.write(BASH_LIB)
        for i, t in enumerate(tools):
            f.write(f'{t["ident"]}() {{ __codeexec_tool {i} "$@"; }}\n')
    env = dict(os.environ, BASH_ENV="/tmp/.ptc/tools.sh")
    p = subprocess.Popen(CFG["argv"], env=env)
    done_r, done_w = os.pipe()
    threading.Thread(target=lambda: (p.wait(), os.write(done_w, b"x")), daemon=True).start()
    buf, batch, seq, dirs = b"", [], 0, {}
    first = last = 0.0
    while True:
        timeout = None
        if batch:  # coalesce calls from background jobs: 20 ms of quiet, 200 ms at most
            timeout = max(0.0, min(last + 0.02, first + 0.2) - time.monotonic())
        ready, _, _ = select.select([rfd, conn, done_r], [], [], timeout)
        if done_r in ready:
            break
        if rfd in ready:
            try:
                buf += os.read(rfd, 65536)
            except BlockingIOError:
                pass
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                d, _, idx = line.decode("utf-8", "replace").partition(" ")
                if not d.startswith("/tmp/.ptc/calls/c.") or "/" in d[len("/tmp/.ptc/calls/"):]:
                    continue
                try:
                    t = tools[int(idx)]
                    with open(d + ".in", "rb") as f:
                        raw = f.read().decode("utf-8", "replace")
                except (ValueError, IndexError, OSError):
                    continue
                try:
                    arg = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    arg = raw
                seq += 1
                dirs[str(seq)] = d
                now = time.monotonic()
                if not batch:
                    first = now
                last = now
                batch.append({"id": str(seq), "name": t["name"], "input": arg})
        if conn in ready:
            for msg in lines.feed():
                for r in msg.get("results", []):
                    d = dirs.pop(r.get("id"), None)
                    if d is not None:
                        threading.Thread(target=deliver, args=(d, bool(r.get("ok")), bash_payload(r)), daemon=True).start()
        if batch and time.monotonic() >= min(last + 0.02, first + 0.2):
            send({"calls": batch})
            batch = []
    rc = p.returncode
    os._exit(rc if rc >= 0 else 128 - rc)


if CFG["lang"] == "bash":
    run_bash()
else:
    run_python()
