"""Results computed by several processes, or inside one another, are computed once and counted once: a result
being computed is claimed, another process wanting it waits for it, and a result computed inside another is
recorded as nested CPU time."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from trsp_lib import results

OTHER = """
import sys, time
from trsp_lib.results import stored
stored(sys.argv[1], "k1", lambda: (time.sleep(4), {"by": "the other process"})[1])
"""


HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_claim_is_held_by_a_live_process_and_freed_when_it_is_killed(tmp_path, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    with results.claim("abc") as mine:
        assert mine
        with results.claim("abc") as again:  # a row computing its own dependencies holds it again
            assert again
    (tmp_path / ".claims").mkdir(exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / ".claims" / "abc")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with results.claim("abc") as mine:
            assert not mine  # a live process holds it
    finally:
        holder.kill()
        holder.wait()
    with results.claim("abc") as mine:  # its process was killed: the kernel freed the claim
        assert mine and (tmp_path / ".claims" / "abc").exists()
    assert not (tmp_path / ".claims" / "abc").exists()  # released: its file deleted


def test_a_claim_whose_file_was_deleted_meanwhile_is_taken_again(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    real, calls = fcntl.flock, []

    def flock(f, op):  # the holder deletes the file between our open and our lock
        if not calls:
            os.unlink(f.name)
        calls.append(op)
        return real(f, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    with results.claim("k") as mine:
        assert mine and len(calls) == 2  # the lock on the deleted file did not count: the path was tried again
        assert os.path.exists(tmp_path / ".claims" / "k")


def test_a_result_another_process_computes_is_waited_for_not_computed(tmp_path, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    path = tmp_path / "kind" / "k1.json"
    other = subprocess.Popen([sys.executable, "-c", OTHER, str(path)], env={**os.environ, "TRSP_QUIET": "1"})
    try:
        deadline = time.time() + 60
        while True:  # until the other process holds k1
            assert other.poll() is None and time.time() < deadline, "the other process never claimed k1"
            with results.claim("k1") as mine:
                if not mine:
                    break
            time.sleep(0.05)
        record = results.stored(path, "k1", lambda: {"by": "this process"})
    finally:
        other.wait()
    assert record["by"] == "the other process"


def _burn(seconds: float) -> None:
    t = time.process_time()
    while time.process_time() - t < seconds:
        pass


def test_a_result_computed_inside_another_is_counted_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    inner = lambda: results.stored(tmp_path / "inner.json", "i1", lambda: (_burn(0.3), {})[1])  # noqa: E731
    outer = results.stored(tmp_path / "outer.json", "o1", lambda: (inner(), _burn(0.1), {})[2])
    made = results.stored(tmp_path / "inner.json", "i1", lambda: {})
    assert outer["nested_cpu_s"] == made["cpu_s"] >= 0.3 and made["nested_cpu_s"] == 0.0
    assert outer["cpu_s"] - outer["nested_cpu_s"] >= 0.1  # its own work, what a sum over records adds
