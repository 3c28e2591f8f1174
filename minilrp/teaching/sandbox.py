"""A student's file in its own process: guarded imports, a time limit from outside, a wire format
that cannot run code.

The checker (parent) starts ``python -I sandbox.py`` (this file, run as a script: it imports only
the standard library and NumPy, never the ``minilrp`` package) and talks to it over two pipes.

Parent -> child: a *hello* (the exercise's policy), then ``import`` (the student's file), then
one ``call`` per check (function name and arguments). Child -> parent: one reply per message.
The parent waits for each reply with a deadline and kills the process (SIGKILL) when it passes:
the time limit is enforced from outside, where the student's code cannot catch it. A process
that dies (``os._exit``, a segfault, the memory limit) is reported as dead, with its exit status
or signal and the last line it wrote to stderr.

Messages are a JSON header plus ``.npy`` arrays read with ``allow_pickle=False``: a reply from
the student's process can carry numbers, never code for the checker to run.

What the child guards, once its setup is done (before the student's file is imported):

- imports: a meta-path finder refuses every ``minilrp`` module the policy does not allow (for
  most exercises: all of them), by name and by file location (the package loaded under another
  name is refused too), with a message naming the exercise's allowed helpers;
- files: an audit hook (which cannot be removed) refuses to open any file inside the minilrp
  package but those the policy's engine needs (so neither the library's source nor the
  committed reference files can be read or executed), and refuses to start processes
  (``subprocess``, ``os.system``, ``os.fork``, ...) or send signals to other processes;
- methods: names the policy lists (``Network.gradient`` for SA) are replaced on their class by a
  guard that raises, so ``net.gradient``, ``type(net).gradient`` and ``getattr`` all meet it;
- memory: ``RLIMIT_AS`` caps the address space (a MemoryError in the student's code);
- output: the student's prints are captured (first lines kept) and fds 1/2 go nowhere useful.

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
# The child: guards, the student's file, calls
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
    imported here. Returns from_arrays."""
    import importlib.util
    spec = importlib.util.find_spec("minilrp")
    if spec is None and root:  # minilrp run from a source tree (PYTHONPATH, which -I ignores)
        sys.path.append(root)
        spec = importlib.util.find_spec("minilrp")
    if spec is None:
        raise RuntimeError("minilrp is not importable in the checker's child process")
    pkg = _GuardedPackage("minilrp")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__package__ = "minilrp"
    pkg.__file__ = spec.origin
    pkg._policy = policy
    sys.modules["minilrp"] = pkg
    from minilrp.engine.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU
    from minilrp.engine.network import Network
    from minilrp.models.io import from_arrays
    # compile or load every kernel the checks use (float64) before the student's clock starts
    rng = np.random.default_rng(0)
    net = Network([Conv2d(1, 2, 3, padding=1), ReLU(), MaxPool2d(2), AvgPool2d(2), Flatten(), Dense(8, 3)],
                  (1, 8, 8)).astype(np.float64)
    net.forward(rng.standard_normal((2, 1, 8, 8)))
    net.backward(np.ones((2, 3)))
    for name in policy.get("guard_methods", []):
        _guard_method(Network, name, policy)
    return from_arrays, os.path.dirname(os.path.realpath(spec.origin))


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


def child_main(cmd_fd, reply_fd):
    from multiprocessing.connection import Connection
    incoming, outgoing = Connection(cmd_fd, writable=False), Connection(reply_fd, readable=False)
    _quiet_fds()
    sys.dont_write_bytecode = True
    hello = unpack(incoming.recv_bytes())
    policy, path = hello["policy"], hello["student"]
    from_arrays, open_ok = None, [HERE, os.path.realpath(path)]
    minilrp_dir = hello.get("minilrp_dir")
    if policy.get("engine"):
        from_arrays, pkg_dir = _load_engine(hello.get("root"), policy)
        minilrp_dir = pkg_dir
        open_ok += [os.path.join(pkg_dir, "engine"), os.path.join(pkg_dir, "models", "io.py"),
                    os.path.join(pkg_dir, "errors.py")]
    allowed = {m for m in sys.modules if m == "minilrp" or m.startswith("minilrp.")}
    if hello.get("memory_mb"):
        try:
            import resource
            with open("/proc/self/statm") as f:  # the address space in use after the setup
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limit = used + int(hello["memory_mb"]) * (1 << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, OSError, ValueError):
            pass  # no limit where the platform has none
    sys.meta_path.insert(0, _Finder(policy, allowed, minilrp_dir and os.path.realpath(minilrp_dir)))
    _audit_hook(policy, open_ok, minilrp_dir and os.path.realpath(minilrp_dir), block_ctypes=not policy.get("engine"))
    outgoing.send_bytes(pack({"status": "ready"}))
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


# ======================================================================================
# The parent's side: one student process
# ======================================================================================
class StudentProcess:
    """Start a child for ``student`` under ``policy``; :meth:`request` sends one message and
    waits for its reply until a deadline. Replies with status "timeout" or "died" mean the
    process is gone. Use as a context manager (the process is killed on exit)."""

    START_TIMEOUT = 120.0  # seconds for the child's own setup (not the student's time)

    def __init__(self, student, policy, exercise, memory_mb=None):
        import queue
        import subprocess
        import tempfile
        from multiprocessing.connection import Connection
        cmd_r, cmd_w = os.pipe()
        reply_r, reply_w = os.pipe()
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   NUMBA_NUM_THREADS="1")
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-I", HERE, str(cmd_r), str(reply_w)],
                                     pass_fds=(cmd_r, reply_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.stderr, env=env)
        os.close(cmd_r)
        os.close(reply_w)
        self.to_child, self.from_child = Connection(cmd_w, readable=False), Connection(reply_r, writable=False)
        self.replies = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        import minilrp
        pkg = os.path.dirname(os.path.realpath(minilrp.__file__))
        hello = {"policy": {**policy, "exercise": exercise}, "student": os.path.abspath(student),
                 "minilrp_dir": pkg, "root": os.path.dirname(pkg), "memory_mb": memory_mb}
        self.alive = True
        self.started = self._send(hello, self.START_TIMEOUT)

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

    def _send(self, message, timeout):
        import queue
        if not self.alive:
            return {"status": "died", "message": "the process is not running"}
        try:
            self.to_child.send_bytes(pack(message))
        except (BrokenPipeError, OSError):
            pass  # it died: the reader reports it
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            return {"status": "timeout"}
        if reply is None:
            why = self._death()
            self.kill()
            return {"status": "died", "message": why}
        return reply

    def request(self, message, timeout):
        return self._send(message, timeout)

    def _death(self):
        import signal
        try:
            code = self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            code = None
        if code is None:
            why = "it closed its connection to the checker"
        elif code < 0:
            try:
                why = f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                why = f"killed by signal {-code}"
        else:
            why = f"exited with status {code}"
        self.stderr.seek(0)
        tail = [line for line in self.stderr.read()[-2000:].decode("utf-8", "replace").splitlines() if line.strip()]
        return why + (f" (last words on stderr: {tail[-1].strip()[:150]!r})" if tail else "")

    def kill(self):
        if self.alive:
            self.alive = False
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
            self.to_child.close()
            self.reader.join(timeout=5)  # it sees the end of the pipe, then stops
            try:
                self.from_child.close()
            except OSError:
                pass
            self.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


if __name__ == "__main__":
    child_main(int(sys.argv[1]), int(sys.argv[2]))
