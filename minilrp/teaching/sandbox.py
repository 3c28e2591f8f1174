"""A student's file in its own process: guarded imports, a time limit from outside, a wire format
that cannot run code.

Three kinds of process, all started from this file run as a script (``python -I sandbox.py``:
it imports only the standard library and NumPy, never the ``minilrp`` package):

- the *zygote* (:class:`Zygote`, one per exercise being checked or graded) does the setup every
  student's process needs once (NumPy; for the engine exercises minilrp's engine with its
  numba kernels loaded, about a second) and then forks, per student file,
- a *supervisor*, which forks the *student's process* and waits for it: when it dies
  (``os._exit``, a segfault, the memory limit) the supervisor tells the checker how (exit
  status or signal; the checker adds the last line it wrote to stderr);
- the student's process raises its guards, imports the student's file and answers the
  checker's messages, one reply each.

The checker (:class:`StudentProcess`) sends ``import``, ``inspect`` and one ``call`` per check
(function name and arguments) and waits for each reply with a deadline; when it passes it
kills the student's process (SIGKILL): the time limit is enforced from outside, where the
student's code cannot catch it. Starting a student's process costs a fork (about 20 ms),
not an interpreter.

Messages are a JSON header plus ``.npy`` arrays read with ``allow_pickle=False``: a reply from
the student's process can carry numbers, never code for the checker to run.

What the student's process guards, before the student's file is imported:

- imports: a meta-path finder refuses every ``minilrp`` module the policy does not allow (for
  most exercises: all of them), by name and by file location (the package loaded under another
  name is refused too), with a message naming the exercise's allowed helpers;
- files: an audit hook (which cannot be removed) refuses to open any file inside the minilrp
  package but those the policy's engine needs (so neither the library's source nor the
  committed reference files can be read or executed), and refuses to start processes
  (``subprocess``, ``os.system``, ``os.fork``, ...) or send signals to other processes;
- methods: names the policy lists (``Network.gradient`` for SA) are replaced on their class by a
  guard that raises, so ``net.gradient``, ``type(net).gradient`` and ``getattr`` all meet it;
- memory: ``RLIMIT_AS`` caps the address space (a MemoryError in the student's code), and
  ``RLIMIT_CPU`` the CPU time of the whole file (a backstop should the checker be killed);
- output: the student's prints are captured (first lines kept); fd 1 goes to /dev/null, fd 2 to a
  file the checker reads when the process dies.

What it does not stop (docs/instructors.md says so too): a student who copies the library's code
into their file, or who reads files elsewhere on the machine. It is a guard for grading honest
work, not a security boundary: run untrusted code in a container.
"""
from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import traceback
import types
import warnings

import numpy as np
from multiprocessing.connection import Connection

HERE = os.path.realpath(__file__)
MAX_MESSAGE = 1 << 30  # bytes: a reply larger than this is refused
PRINT_LINES = 5  # the student's printed lines kept per call


# ======================================================================================
# The wire format: JSON header + .npy arrays (never pickle)
# ======================================================================================
def pack(obj) -> bytes:
    """Encode dicts/lists/tuples/str/numbers/None/ndarrays (not object arrays) as bytes."""
    arrays = []

    def enc(v):
        if isinstance(v, np.ndarray):
            arrays.append(v)
            return {"__array__": len(arrays) - 1}
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x) for x in v]}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, dict):
            return {str(k): enc(x) for k, x in v.items()}
        if isinstance(v, np.generic):
            return v.item()
        return v

    header = json.dumps(enc(obj)).encode("utf-8")
    out = io.BytesIO()
    out.write(len(header).to_bytes(8, "big"))
    out.write(header)
    for a in arrays:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.require(a, requirements='C'), allow_pickle=False)
        data = buf.getvalue()
        out.write(len(data).to_bytes(8, "big"))
        out.write(data)
    return out.getvalue()


def unpack(data: bytes):
    """The inverse of :func:`pack`; arrays are read with ``allow_pickle=False``."""
    view = memoryview(data)
    n = int.from_bytes(view[:8], "big")
    header = json.loads(bytes(view[8:8 + n]).decode("utf-8"))
    pos, arrays = 8 + n, []
    while pos < len(view):
        m = int.from_bytes(view[pos:pos + 8], "big")
        arrays.append(np.lib.format.read_array(io.BytesIO(view[pos + 8:pos + 8 + m]), allow_pickle=False))
        pos += 8 + m

    def dec(v):
        if isinstance(v, dict):
            if "__array__" in v:
                return arrays[v["__array__"]]
            if "__tuple__" in v:
                return tuple(dec(x) for x in v["__tuple__"])
            return {k: dec(x) for k, x in v.items()}
        if isinstance(v, list):
            return [dec(x) for x in v]
        return v

    return dec(header)


def portable(value):
    """What a student's function returned, in a form the wire carries: an array (lists and
    scalars converted), or a marker {"returned": kind, ...} for None, a tuple, or an object
    no array can hold."""
    if value is None:
        return {"returned": "none"}
    if isinstance(value, tuple):
        return {"returned": "tuple", "length": len(value)}
    if isinstance(value, np.ndarray) and value.dtype != object:
        return np.asarray(value)  # a subclass travels as its data
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - any object the student returns
        arr = None
    if arr is None or arr.dtype == object:
        return {"returned": "object", "type": type(value).__name__}
    return arr


# ======================================================================================
# The student's side: guards, the student's file, calls; the supervisor and the zygote
# ======================================================================================
class Forbidden(ImportError):
    """Raised for what an exercise does not allow (an import, a file, a method)."""


def _message(what, policy):
    return (f"{what} is not allowed in the exercise {policy['exercise']!r}: "
            f"{policy['hint']}. Allowed here: {policy['allowed']}")


def _inside(path, folder):
    return path == folder or path.startswith(folder + os.sep)


class _Finder:
    """Meta-path finder refusing minilrp modules the policy does not allow: by name, and by
    file (so the package cannot be loaded under another name)."""

    def __init__(self, policy, allowed_modules, minilrp_dir):
        self.policy, self.allowed, self.dir = policy, allowed_modules, minilrp_dir

    def find_spec(self, name, path=None, target=None):
        if (name == "minilrp" or name.startswith("minilrp.")) and name not in self.allowed:
            raise Forbidden(_message(f"importing {name}", self.policy))
        if self.dir is None:
            return None
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(name, path)
        origin = getattr(spec, "origin", None) or ""
        locations = list(getattr(spec, "submodule_search_locations", None) or [])
        if any(_inside(os.path.realpath(p), self.dir) for p in [origin, *locations] if p):
            if name not in self.allowed:
                raise Forbidden(_message(f"importing minilrp's files (as {name})", self.policy))
        return None


_PROCESS_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.fork", "os.forkpty", "pty.spawn"}


def _audit_hook(policy, open_ok, minilrp_dir, block_ctypes):
    """An audit hook (permanent once added) refusing files in the minilrp package other than
    ``open_ok`` (real paths of files or folders), process creation and signals to others.
    (Nothing it calls raises an audit event of its own: it needs no guard against recursion.)"""
    me = os.getpid()

    def hook(event, args):
        if event == "open" and minilrp_dir is not None:
            path = args[0]
            if isinstance(path, int) or path is None:
                return
            real = os.path.realpath(os.fsdecode(os.fspath(path)))
            if _inside(real, minilrp_dir) and not any(_inside(real, ok) for ok in open_ok):
                raise Forbidden(_message(f"opening minilrp's file {os.path.relpath(real, minilrp_dir)}", policy))
        elif event in _PROCESS_EVENTS:
            raise Forbidden(_message(f"starting a process ({event})", policy))
        elif event in ("os.kill", "os.killpg") and args[0] not in (me, 0):
            raise Forbidden(_message("sending a signal to another process", policy))
        elif block_ctypes and event in ("ctypes.dlopen", "ctypes.dlsym"):
            raise Forbidden(_message("loading C functions with ctypes", policy))

    sys.addaudithook(hook)


class _GuardedPackage(types.ModuleType):
    """The ``minilrp`` package as the child sees it: the modules its setup loaded, and a clear
    message for anything else (``minilrp.Epsilon``, ``minilrp.sensitivity``, ...)."""

    def __getattr__(self, name):
        policy = self.__dict__["_policy"]
        raise Forbidden(_message(f"minilrp.{name}", policy))


def _guard_method(cls, name, policy):
    def guard(*args, **kwargs):
        raise Forbidden(_message(f"{cls.__name__}.{name} (net.{name})", policy))

    guard.__name__ = name
    setattr(cls, name, guard)


def _load_engine(root, policy):
    """Import minilrp's engine (Network, layers, the weight format) without the package's
    __init__ (which would load the rules): a stand-in ``minilrp`` package holds only what is
    imported here. Every kernel the checks use is loaded (float64) before any student's clock
    starts. -> (from_arrays, Network, the package's folder)."""
    import importlib.util
    sys.path.insert(0, root)  # the checker's own copy of minilrp (wherever it is installed) ...
    try:
        spec = importlib.util.find_spec("minilrp")
        if spec is None:
            raise RuntimeError(f"minilrp is not importable from {root}")
        pkg = _GuardedPackage("minilrp")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__package__ = "minilrp"
        pkg.__file__ = spec.origin
        pkg._policy = policy
        sys.modules["minilrp"] = pkg
        from minilrp.engine.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
        from minilrp.engine.network import Network
        from minilrp.models.io import from_arrays
    finally:
        sys.path.remove(root)  # ... and nothing else from the folder it lies in
    rng = np.random.default_rng(0)
    net = Network([Conv2d(1, 2, 3, padding=1), ReLU(), MaxPool2d(2), AvgPool2d(2), Flatten(), Dense(8, 3)],
                  (1, 8, 8)).astype(np.float64)
    net.forward(rng.standard_normal((2, 1, 8, 8)))
    net.backward(np.ones((2, 3)))
    return from_arrays, Network, os.path.dirname(os.path.realpath(spec.origin))


def _where(exc, path):
    """' (file.py, line N)': the deepest frame of the student's file (no source is read)."""
    line = None
    real = os.path.realpath(path)
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if os.path.realpath(frame.f_code.co_filename) == real:
            line = lineno
    return f" ({os.path.basename(path)}, line {line})" if line else ""


def _describe(exc, path):
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' + msg if msg else ''}{_where(exc, path)}"


def _forbidden_in(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Forbidden):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class _Captured(io.TextIOBase):
    """Keeps the first PRINT_LINES lines written, counts the rest (a printing loop costs no memory)."""

    def __init__(self):
        self.lines, self.count, self.partial = [], 0, ""

    def writable(self):
        return True

    def write(self, s):
        s = str(s)
        parts = (self.partial + s).split("\n")
        self.partial = parts.pop()[:200]
        self.count += len(parts)
        room = PRINT_LINES - len(self.lines)
        if room > 0:
            self.lines.extend(p[:200] for p in parts[:room])
        return len(s)

    def result(self):
        extra = 1 if self.partial else 0
        lines = self.lines + ([self.partial] if self.partial and len(self.lines) < PRINT_LINES else [])
        return {"count": self.count + extra, "first": lines}


def _quiet_fds():
    """Point fds 0, 1, 2 elsewhere: the student's (or C code's) writes cannot reach the
    protocol, and stderr goes to the file the parent reads when the process dies."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)


def _run_guarded(fn, path):
    """Call fn() with the student's prints captured; -> (value, error reply or None, printed)."""
    captured = _Captured()
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = captured
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return fn(), None, captured.result()
    except NotImplementedError as e:
        return None, {"status": "not-implemented", "message": _describe(e, path)}, captured.result()
    except BaseException as e:  # noqa: BLE001 - SystemExit, KeyboardInterrupt, MemoryError: all reported
        forbidden = _forbidden_in(e)
        if forbidden is not None:
            return None, {"status": "forbidden", "message": str(forbidden) + _where(e, path)}, captured.result()
        return None, {"status": "exception", "message": _describe(e, path)}, captured.result()
    finally:
        sys.stdout, sys.stderr = old


def _import_student(path):
    """Run the student's file as module ``student_solution`` (compiled from its source: no
    bytecode cache is read or written); -> (module or None, reply)."""
    module = types.ModuleType("student_solution")
    module.__file__ = path
    sys.path.insert(0, os.path.dirname(os.path.realpath(path)))  # the student's helper modules
    sys.modules[module.__name__] = module

    def load():
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), module.__dict__)
        return module

    value, err, printed = _run_guarded(load, path)
    if err is None:
        return module, {"status": "ok", "printed": printed}
    return None, {**err, "printed": printed}


def _inspect(module, functions):
    """Which of ``functions`` the module defines, and the public callables it does define."""
    names = vars(module)
    defined = sorted(n for n, v in names.items() if callable(v) and not n.startswith("_")
                     and getattr(v, "__module__", None) == module.__name__)
    return {"status": "ok", "callable": {f: callable(names.get(f)) for f in functions}, "defined": defined}


def _call(module, path, msg, from_arrays):
    fn = getattr(module, msg["function"], None)
    if not callable(fn):
        return {"status": "missing"}
    names = msg["names"]
    args = [from_arrays(a["network"], dtype=np.float64) if isinstance(a, dict) and "network" in a else a
            for a in msg["args"]]
    originals = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
    start = time.perf_counter()
    value, err, printed = _run_guarded(lambda: fn(*args), path)
    seconds = time.perf_counter() - start
    if err is not None:
        return {**err, "printed": printed, "seconds": seconds}
    mutated = next((n for n, a, o in zip(names, args, originals) if o is not None and
                    (a.shape != o.shape or not np.array_equal(a, o, equal_nan=True))), None)
    return {"status": "ok", "value": portable(value), "mutated": mutated, "printed": printed,
            "seconds": seconds}


def _student(cmd_fd, reply_fd, request, config, engine):
    """The student's process (forked from the zygote): guards up, then one reply per message."""
    incoming, outgoing = Connection(cmd_fd, writable=False), Connection(reply_fd, readable=False)
    policy, path = config["policy"], request["student"]
    minilrp_dir = config["minilrp_dir"] and os.path.realpath(config["minilrp_dir"])
    open_ok = [HERE, os.path.realpath(path)]
    from_arrays = None
    if engine is not None:
        from_arrays, network, minilrp_dir = engine
        open_ok += [os.path.join(minilrp_dir, "engine"), os.path.join(minilrp_dir, "models", "io.py"),
                    os.path.join(minilrp_dir, "errors.py")]
        for name in policy.get("guard_methods", []):
            _guard_method(network, name, policy)
    allowed = {m for m in sys.modules if m == "minilrp" or m.startswith("minilrp.")}
    _limit(request.get("memory_mb"), request.get("cpu_seconds"))
    sys.meta_path.insert(0, _Finder(policy, allowed, minilrp_dir))
    _audit_hook(policy, open_ok, minilrp_dir, block_ctypes=engine is None)
    outgoing.send_bytes(pack({"status": "ready", "pid": os.getpid()}))
    module = None
    while True:
        try:
            msg = unpack(incoming.recv_bytes())
        except (EOFError, OSError):
            return
        try:
            if msg["op"] == "import":
                module, reply = _import_student(path)
            elif msg["op"] == "inspect":
                reply = _inspect(module, msg["functions"])
            else:
                reply = _call(module, path, msg, from_arrays)
        except Exception as e:  # noqa: BLE001 - e.g. a student object that breaks inspection
            reply = {"status": "exception", "message": _describe(e, path)}
        try:
            data = pack(reply)
        except Exception as e:  # noqa: BLE001 - e.g. an array the wire cannot carry
            data = pack({"status": "exception", "message": f"the result cannot be sent back: {e}"})
        outgoing.send_bytes(data)


def _limit(memory_mb, cpu_seconds):
    """Cap the address space at its size now plus ``memory_mb`` (a MemoryError in the student's
    code beyond it), and the CPU time (a backstop: the checker's deadline comes first, this
    ends a process whose checker was killed before it could kill it)."""
    try:
        import resource
    except ImportError:
        return  # no limits where the platform has none
    if memory_mb:
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = used + int(memory_mb) * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_seconds), int(cpu_seconds)))


def _exit_words(code):
    """A process's exit code (negative: the signal) in words."""
    import signal
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def _supervise(fds, request, config, engine):
    """Between the zygote and a student's process: fork it, wait for it, and say on the reply
    pipe how it ended (the checker reads this when the student's process dies mid-call)."""
    import signal
    cmd_fd, reply_fd, err_fd = fds
    os.dup2(err_fd, 2)  # the student's last words go to the checker's file for them
    os.close(err_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _student(cmd_fd, reply_fd, request, config, engine)
        except BaseException:  # noqa: BLE001 - the setup failed: its last words, then a non-zero exit
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(cmd_fd)  # the student's process sees the end of the commands when the checker closes them
    _, status = os.waitpid(pid, 0)
    try:
        Connection(reply_fd, readable=False).send_bytes(
            pack({"status": "died", "message": _exit_words(os.waitstatus_to_exitcode(status))}))
    except OSError:
        pass
    os._exit(0)


def zygote_main(sock_fd):
    """The zygote: the setup every student's process needs (NumPy; for the engine exercises
    minilrp's engine with its kernels loaded), done once; then a fork per request. A request
    is a JSON message with three fds (commands in, replies out, stderr); the reply is the pid
    of the supervisor forked for it."""
    import signal
    import socket
    sock = socket.socket(fileno=sock_fd)
    _quiet_fds()
    sys.dont_write_bytecode = True
    config = json.loads(sock.recv(1 << 16).decode("utf-8"))
    engine = _load_engine(config.get("root"), config["policy"]) if config["policy"].get("engine") else None
    sock.sendall(b"ready")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)  # set up: nothing more to say (each student's process gets its own stderr)
    os.close(null)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the system
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 3)
        except OSError:
            return
        if not msg:
            return
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                _supervise(fds, json.loads(msg.decode("utf-8")), config, engine)
            finally:
                os._exit(1)  # never back into the zygote's loop
        for fd in fds:
            os.close(fd)
        sock.sendall(str(pid).encode())


# ======================================================================================
# The checker's side: the zygote and one student process
# ======================================================================================
THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}


class Zygote:
    """A process that holds the set-up state of one exercise's policy and forks a fresh process
    for each student file (``StudentProcess(zygote, ...)``): starting one costs a fork, not an
    interpreter with NumPy (and numba's kernels for the engine exercises). Safe to share between
    threads; a context manager (stops the zygote on exit)."""

    START_TIMEOUT = 120.0  # seconds for the setup (not any student's time)

    def __init__(self, policy, exercise):
        import socket
        import subprocess
        mine, theirs = socket.socketpair()
        self.proc = subprocess.Popen([sys.executable, "-I", HERE, "zygote", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=dict(os.environ, **THREAD_ENV))
        theirs.close()
        self.sock, self.lock = mine, threading.Lock()
        import minilrp
        pkg = os.path.dirname(os.path.realpath(minilrp.__file__))
        config = {"policy": {**policy, "exercise": exercise}, "minilrp_dir": pkg, "root": os.path.dirname(pkg)}
        self.sock.settimeout(self.START_TIMEOUT)
        why = "no answer"
        try:
            self.sock.sendall(json.dumps(config).encode("utf-8"))
            answer = self.sock.recv(64)
        except OSError as e:
            answer, why = b"", str(e)
        if answer != b"ready":
            self.close()
            err = self.proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"the checker's student process could not be set up: {err[-1] if err else why}")
        self.proc.stderr.close()
        self.sock.settimeout(None)

    def fork(self, request, fds) -> int:
        """A new supervised student process for ``request`` on ``fds``; -> the supervisor's pid."""
        import socket
        with self.lock:
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode("utf-8")], fds)
                return int(self.sock.recv(64))
            except (OSError, ValueError) as e:
                raise RuntimeError(f"the checker's zygote process is gone ({e})") from None

    def close(self):
        try:
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StudentProcess:
    """One student's process, forked by ``zygote``: :meth:`request` sends one message and waits
    for its reply until a deadline; a reply with status "timeout" or "died" means the process
    is gone. ``started``: the first reply ("ready", or why not). memory_mb: address space the
    student's code may add; cpu_seconds: CPU time the process may use in all. A context manager."""

    START_TIMEOUT = 60.0  # seconds for the guards to go up (not the student's time)

    def __init__(self, zygote, student, memory_mb=None, cpu_seconds=None):
        import queue
        import tempfile
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        self.stderr = tempfile.TemporaryFile()
        self.to_child, self.from_child = Connection(cmd_w, readable=False), Connection(reply_r, writable=False)
        self.replies, self.alive, self.pid = queue.Queue(), True, None
        self.reader = threading.Thread(target=self._read, daemon=True)
        try:
            self.supervisor = zygote.fork({"student": os.path.abspath(student), "memory_mb": memory_mb,
                                           "cpu_seconds": cpu_seconds}, [cmd_r, reply_w, self.stderr.fileno()])
        except RuntimeError as e:
            self.supervisor = None
            self.started = {"status": "died", "message": str(e)}
            self.kill()
            return
        finally:
            os.close(cmd_r)
            os.close(reply_w)
        self.reader.start()
        self.started = self._wait(self.START_TIMEOUT)
        self.pid = self.started.get("pid")

    def _read(self):
        while True:
            try:
                data = self.from_child.recv_bytes(MAX_MESSAGE)
            except (EOFError, OSError):
                self.replies.put(None)
                return
            try:
                self.replies.put(unpack(data))
            except Exception as e:  # noqa: BLE001 - a malformed message is a failed reply
                self.replies.put({"status": "exception", "message": f"unreadable reply ({e})"})

    def _wait(self, timeout):
        import queue
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            return {"status": "timeout"}
        if reply is None or reply.get("status") == "died":
            why = "it stopped answering" if reply is None else reply["message"]
            self.kill()
            return {"status": "died", "message": why + self._last_words()}
        return reply

    def request(self, message, timeout):
        """Send ``message``, wait up to ``timeout`` seconds for the reply."""
        if not self.alive:
            return {"status": "died", "message": "the process is not running"}
        try:
            self.to_child.send_bytes(pack(message))
        except OSError:
            pass  # it died: its supervisor says how
        return self._wait(timeout)

    def _last_words(self):
        if self.stderr.closed:
            return ""
        self.stderr.seek(0)
        tail = [line for line in self.stderr.read()[-2000:].decode("utf-8", "replace").splitlines() if line.strip()]
        return f" (last words on stderr: {tail[-1].strip()[:150]!r})" if tail else ""

    def kill(self):
        """Stop the student's process (SIGKILL: nothing it does can delay it) and let go of it."""
        import signal
        if not self.alive:
            return
        self.alive = False
        target = self.pid or self.supervisor
        if target:
            try:
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # gone already
        self.to_child.close()
        if self.reader.is_alive():
            self.reader.join(timeout=5)  # it sees the supervisor close the replies, then stops
        if not self.reader.is_alive():
            self.from_child.close()

    def close(self):
        self.kill()
        self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


if __name__ == "__main__":
    zygote_main(int(sys.argv[2]))
