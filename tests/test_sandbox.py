"""The student process's wire format carries numbers, never code."""
import io

import numpy as np
import pytest

from minilrp.teaching.sandbox import pack, portable, unpack


def test_round_trip_of_every_kind():
    msg = {"op": "call", "args": [np.arange(6.0).reshape(2, 3), np.int64(3), 0.25, None, (2, 3),
                                  {"network": {"architecture": np.frombuffer(b'{"a": 1}', np.uint8)}},
                                  np.float64(2.5), np.array(7.0), "text", [1, [2, 3]]]}
    out = unpack(pack(msg))
    a = out["args"]
    assert np.array_equal(a[0], msg["args"][0]) and a[0].dtype == np.float64
    assert a[1:5] == [3, 0.25, None, (2, 3)]
    assert a[5]["network"]["architecture"].tobytes() == b'{"a": 1}'
    assert a[6] == 2.5 and a[7].shape == () and a[7] == 7.0  # a 0-d array stays 0-d
    assert a[8:] == ["text", [1, [2, 3]]]


def test_object_arrays_are_refused_both_ways():
    with pytest.raises(ValueError):
        pack({"x": np.array([object()], dtype=object)})
    # a forged message holding a pickle is not unpickled
    header = b'{"__array__": 0}'
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    data = buf.getvalue()
    forged = len(header).to_bytes(8, "big") + header + len(data).to_bytes(8, "big") + data
    with pytest.raises(ValueError, match="allow_pickle"):
        unpack(forged)


def test_portable_markers():
    assert portable(None) == {"returned": "none"}
    assert portable((1, 2)) == {"returned": "tuple", "length": 2}
    assert portable(object()) == {"returned": "object", "type": "object"}
    assert portable([[1.0, 2.0]]).shape == (1, 2)
    assert portable("abc").dtype.kind == "U"
    assert portable(np.float64(3)).shape == ()


NUMPY_POLICY = {"allowed": "NumPy", "hint": "write it yourself"}


@pytest.mark.slow
def test_student_processes_are_forked_from_one_zygote(tmp_path):
    """Each file gets a fresh process (a crash or a global of one never reaches the next), and
    the time limits hold from outside: the per-call deadline, and a CPU-time backstop."""
    import time
    from minilrp.teaching.sandbox import StudentProcess, Zygote
    path = tmp_path / "s.py"
    path.write_text("import os\nSTATE = []\n"
                    "def remember(x):\n    STATE.append(x)\n    return len(STATE)\n"
                    "def pid():\n    return os.getpid()\n"
                    "def crash():\n    import faulthandler; faulthandler._sigsegv()\n"
                    "def spin():\n    while True:\n        pass\n")
    with Zygote(NUMPY_POLICY, "demo") as zygote:
        pids = set()
        for _ in range(2):
            with StudentProcess(zygote, path) as p:
                assert p.started["status"] == "ready" and p.pid != zygote.proc.pid
                assert p.request({"op": "import"}, 5)["status"] == "ok"
                call = {"op": "call", "names": ["x"], "args": [1.0]}
                assert p.request({**call, "function": "remember"}, 5)["value"] == 1  # fresh globals
                pids.add(int(p.request({**call, "function": "pid", "names": [], "args": []}, 5)["value"]))
                died = p.request({**call, "function": "crash", "names": [], "args": []}, 5)
                assert died == {"status": "died", "message": "killed by signal SIGSEGV"}
                assert not p.alive
        assert len(pids) == 2
        with StudentProcess(zygote, path) as p:  # the deadline: SIGKILL from the checker
            p.request({"op": "import"}, 5)
            start = time.perf_counter()
            assert p.request({"op": "call", "function": "spin", "names": [], "args": []}, 0.5) == {"status": "timeout"}
            assert time.perf_counter() - start < 3
        with StudentProcess(zygote, path, cpu_seconds=1) as p:  # the backstop: RLIMIT_CPU
            p.request({"op": "import"}, 5)
            reply = p.request({"op": "call", "function": "spin", "names": [], "args": []}, 30)
            assert reply["status"] == "died" and ("SIGXCPU" in reply["message"] or "SIGKILL" in reply["message"])
