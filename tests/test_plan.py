"""The plan (study/plan.py): every row the book reads, declared once; the committed results are exactly its rows;
a label means one configuration; the parameters reach every row; `python -m study` drives it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from study import plan, runner
from study.__main__ import main

CALIB_FREE = {"dense", "reverse", "random"}  # a model or selection that never sees the calibration text


def keys(P: plan.Params, chapter: str | None = None) -> dict[tuple, str | None]:
    """Row identity -> its key (None while it waits on a choice), choices made from the cache."""
    rows, _ = runner.resolved(P, chapter)
    return {(r.label, r.model, r.seed, r.limit, r.ratio, r.kind): runner.probe(r, P)[0] for r in rows}


def test_the_default_plan_is_cached_and_reads_every_committed_result(committed):
    rows, ch = runner.resolved(plan.Params())
    assert all(ch[k] is not None for k in ("tuned", "lin", "kd", "ft", "scope", "heal_lr:sleb", "heal_lr:shortgpt"))
    read = {runner.probe(r, plan.Params())[0]: r for r in rows}
    missing = [(r.label, r.model, r.seed) for k, r in read.items() if k is None]
    assert not missing and all(runner.read(r, plan.Params(), compute=False) for r in rows)
    for r in rows:  # nor does any row's call need another result that is missing (its selection's own row, dense)
        with runner.capture() as seen:
            runner.read(r, plan.Params(), compute=False)
        assert all(record is not None for _, _, record in seen), (r.label, [str(p) for p, _, x in seen if x is None])
    on_disk = {p.stem.rsplit("-", 1)[-1]: p for p in committed.rglob("*.json") if p.parent.name in
               ("rows", "speed", "layer_scores")}
    assert sorted(str(p.relative_to(committed)) for k, p in on_disk.items() if k not in read) == []


def test_a_label_means_one_configuration_on_every_page(committed):
    rows, _ = runner.resolved(plan.Params())
    meaning: dict[tuple, set] = {}
    for r in rows:
        meaning.setdefault((r.model, r.label), set()).add(r.configuration())
    assert {k: len(v) for k, v in meaning.items() if len(v) > 1} == {}
    labels = {r.label for r in rows}
    assert {"sleb+ft", "sleb+ft (lr 2e-5)", "shortgpt+ft", "shortgpt+ft (lr 2e-5)"} <= labels  # tuned and untuned


def test_two_rows_of_one_label_that_differ_are_caught():
    P = plan.Params()
    a = plan.row(P, "sleb+ft", "sleb+ft", heal={"lr": 1e-4}, extra=True)
    b = plan.row(P, "sleb+ft", "sleb+ft", heal={"lr": 2e-5}, extra=True)
    assert a.configuration() != b.configuration()
    assert plan.row(P, "sleb+ft", "sleb+ft", heal={"lr": 1e-4}, extra=True, seed=2, limit=500).configuration() \
        == a.configuration()  # seed and items aside


@pytest.fixture(params=["default", "tiny"])
def profile(request, tmp_path, monkeypatch) -> plan.Params:
    """The default plan on the committed results, and the tiny book's plan on an empty results folder (its searches
    have no rows there, so the rows that use their choices wait: only the keys known are compared)."""
    if request.param == "default":
        request.getfixturevalue("committed")
        return plan.Params()
    from study.__main__ import book_params

    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    return plan.Params.of(**book_params("tiny"))


def test_the_calibration_text_reaches_every_row_that_calibrates(profile):
    before, after = keys(profile), keys(profile.set(["calib=news"]))
    same = [k for k, key in after.items() if key is not None and before.get(k) == key]
    assert all(label in CALIB_FREE or kind == "speed" or "calib=" in label  # its own text: the ablation
               for label, _, _, _, _, kind in same), same
    assert sum(key is not None for key in after.values()) > 10


def test_the_evaluation_texts_reach_every_row(profile):
    before, after = keys(profile), keys(profile.set(['eval_texts={"wiki": "news", "news": "wiki"}']))
    same = [k for k, key in after.items() if key is not None and before.get(k) == key]
    assert all(kind in ("speed", "scores") for *_, kind in same), same


def test_the_validation_text_reaches_every_search_and_so_every_choice(committed):
    other = plan.Params().set(['val_texts={"wiki_val": "news_val", "news_val": "wiki_val"}'])
    rows, ch = runner.resolved(other)
    assert all(ch[k] is None for k in ("tuned", "lin", "kd", "heal_lr:sleb"))  # no search reads the old rows
    searched = [r for r in rows if r.section.endswith("search") and r.extra]  # the rows scored on validation
    assert searched and all(runner.probe(r, other)[1] is None for r in searched if not r.waits())
    assert {r.label for r in rows if r.waits()} >= {"trsp (tuned)", "sleb+lin+kd", "sleb+ft"}


def test_a_chapter_reads_its_sections_only():
    P = plan.Params()
    assert {r.label for r in plan.rows(P, {}, "02")} == {"dense", "trsp"}
    with pytest.raises(ValueError, match="unknown chapter '99'"):
        plan.rows(P, {}, "99")


def test_params_reject_an_unknown_name_in_one_line():
    with pytest.raises(ValueError, match=r"unknown study parameter\(s\) \['calibration'\]"):
        plan.Params().set(["calibration=news"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        plan.Params().set(["calib"])
    assert plan.Params().set(["seeds=[0, 1]", "calib=news"]).seeds == (0, 1)


def test_status_and_keys_on_the_default_plan(committed, capsys, monkeypatch):
    monkeypatch.setenv("TRSP_QUIET", "1")  # the library's "[row] cached" lines apart
    assert main(["status", "--chapter", "02"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "2 rows: 2 cached, 0 missing" and len(out) == 3
    assert main(["keys", "--chapter", "02"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")[1]) == 16 for line in lines)


def test_bad_input_is_one_line(capsys):
    assert main(["status", "--chapter", "99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown chapter '99'" in err[0]
    assert main(["keys", "--set", "nope=1"]) == 2
    assert "unknown study parameter" in capsys.readouterr().err


def test_run_computes_the_missing_rows_and_a_rerun_computes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    tiny = ["--profile-book", "tiny", "--chapter", "02"]
    assert main(["status", *tiny]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 rows: 0 cached, 2 missing, about ")
    assert main(["run", *tiny]) == 0
    assert "computed 2 rows" in capsys.readouterr().out
    assert main(["run", *tiny]) == 0
    assert "computed 0 rows" in capsys.readouterr().out
    written = list(Path(tmp_path).rglob("*.json"))
    assert written and all(json.loads(p.read_text())["key"] for p in written)


def test_two_workers_compute_each_row_once(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    monkeypatch.setenv("TRSP_QUIET", "1")
    assert main(["run", "--workers", "2", "--profile-book", "tiny", "--chapter", "02"]) == 0
    out = capfd.readouterr().out
    counts = [int(line.split()[1]) for line in out.splitlines() if line.startswith("computed ")]
    assert len(counts) == 2 and sum(counts) == 2, out
    left = {p.name for p in (Path(tmp_path) / ".claims").iterdir()}
    assert left == {"wanted", "machine"}  # every row's claim was released, its file deleted (the machine's stay)


def test_a_run_with_a_deadline_starts_no_row_it_cannot_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    tiny = ["--profile-book", "tiny", "--chapter", "02"]
    assert main(["run", *tiny, "--hours", "0.00001"]) == 1  # 36 ms: no row fits
    assert "computed 0 rows; 2 left, expected to end after the deadline" in capsys.readouterr().out
    assert not list(Path(tmp_path).rglob("*.json"))
    assert main(["run", *tiny, "--hours", "-1"]) == 2
    assert "give a positive number of hours" in capsys.readouterr().err


def test_a_deadline_is_checked_before_each_row_not_once_per_pass(tmp_path, monkeypatch, capsys):
    import study.__main__ as cli

    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    clock = [1e9]
    monkeypatch.setattr(cli, "time", type("Clock", (), {"time": lambda: clock[0], "sleep": lambda s: None}))
    computed = []

    def read(r, P, compute=True):  # a row that takes its whole estimate and writes nothing
        if not compute:  # a search looking at its candidates
            return None
        computed.append(r.label)
        clock[0] += cli._wall_s(runner.estimate({}, r))

    monkeypatch.setattr(runner, "read", read)
    looks = []  # the deadline's estimates are measured again only when a row has landed (a look costs ~8 s of CPU)
    monkeypatch.setattr(runner, "known_costs", lambda *a, **k: looks.append(k.get("q")) or {})  # the default estimate
    hours = 1.5 * cli._wall_s(runner.estimate({}, plan.Row("x", "x", "m"))) / 3600  # room for one row, not two
    assert main(["run", "--profile-book", "tiny", "--chapter", "02", "--hours", str(hours)]) == 1
    assert len(computed) == 1, computed
    assert "computed 1 rows; 2 left, expected to end after the deadline" in capsys.readouterr().out
    assert looks.count(0.75) == 1  # the fake row wrote nothing: the missing rows never changed, so one look


def test_a_regeneration_is_estimated_from_its_own_costs():
    a, b = plan.Row("sleb", "sleb", "m"), plan.Row("trsp", "trsp", "m")
    spent = lambda s: {"cpu_s": 2.0 * s}  # noqa: E731  (s seconds on 2 cores)
    committed = {"ka": (a, spent(100)), "kb": (b, spent(400))}
    est = runner.calibrated({"ka": (a, spent(50))}, committed)
    assert est[runner._group(a)] == 50  # measured by the regeneration itself
    assert est[runner._group(b)] == 200  # the committed cost, at the regeneration's measured 0.5x
    assert runner.calibrated(committed)[runner._group(b)] == 400
    three = {k: (a, spent(s)) for k, s in [("x", 100), ("y", 200), ("z", 500)]}
    assert runner.calibrated(three)[runner._group(a)] == 200  # the median
    assert runner.calibrated(three, q=0.75)[runner._group(a)] == 350  # the upper quartile: what a deadline keeps
    few, many = plan.Row("sleb", "sleb", "m", limit=50), plan.Row("sleb", "sleb", "m", limit=500)
    est = runner.calibrated({"few": (few, spent(300)), "many": (many, spent(700))})
    assert (runner.estimate(est, few), runner.estimate(est, many)) == (300, 700)  # zero-shot items are costs apart


MACHINE = """
import sys, time
from study.__main__ import _machine
with _machine(alone=False):
    print("in", time.time(), flush=True)
    time.sleep(float(sys.argv[1]))
    print("leaving", time.time(), flush=True)
"""


def test_a_row_that_measures_speed_runs_last_and_alone_with_every_core(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import time

    import torch

    from study.__main__ import _machine, _next

    rows = [plan.Row("speed", "speed", "m", kind="speed"), plan.Row("sleb", "sleb", "m"),
            plan.Row("speed", "speed", "m", kind="speed-row")]
    assert [r.label for r in _next(rows, lambda r: True)] == ["sleb"]
    assert [r.kind for r in _next(rows[::2], lambda r: True)] == ["speed", "speed-row"]
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    env = {**os.environ, "TRSP_RESULTS": str(tmp_path)}
    other = subprocess.Popen([sys.executable, "-c", MACHINE, "2"], env=env, stdout=subprocess.PIPE, text=True)
    assert other.stdout.readline().startswith("in")  # another worker's row is in progress
    threads = torch.get_num_threads()
    with _machine(alone=True):
        t_alone = time.time()
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        late = subprocess.Popen([sys.executable, "-c", MACHINE, "0"], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # a new row may not start meanwhile
        t_last = time.time()
    ended = float(other.stdout.readline().split()[1])
    started = float(late.stdout.readline().split()[1])
    other.wait(), late.wait()
    assert ended <= t_alone and started >= t_last and torch.get_num_threads() == threads
