"""`python -m study status|keys|run [--chapter NN] [--set KEY=VALUE ...]`: the plan, from the command line.

    status   one line per row: chapter(s), label, key, cached / missing, its recorded or estimated cost
    keys     one line per row: label, a tab, key
    run      compute the missing rows (the searches first), with a progress bar and ETA; rerun after a kill.
             `--workers N` runs N processes of cores/N threads each; they share the work by claiming rows
             (a locked file per row under the results folder's .claims/), so several `run`s on one machine never
             compute the same row. `--hours H` starts no row expected to end after H hours (by the upper quartile of
             its kind's measured times: a session of known length stops with nothing half done)
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import subprocess
import sys
import time

from trsp_lib import results

from . import plan, runner


def _chapters(P: plan.Params, ch: dict) -> dict[tuple, str]:
    """Row identity -> the chapters that read it ('00,05,07')."""
    out: dict[tuple, list[str]] = {}
    for c in plan.CHAPTERS:
        for r in plan.rows(P, ch, c):
            out.setdefault(_ident(r), []).append(c)
    return {k: ",".join(v) for k, v in out.items()}


def _ident(r: plan.Row) -> tuple:
    return (r.label, r.model, r.seed, r.limit, r.ratio, r.kind) + r.configuration()


def _minutes(s: float) -> str:
    return "?" if s != s else f"{s / 60:.1f} min"


def _probe_all(P: plan.Params, rows: list[plan.Row]) -> list[tuple[plan.Row, str | None, dict | None]]:
    return [(r, *runner.probe(r, P)) for r in rows]


def status(P: plan.Params, chapter: str | None, keys_only: bool = False) -> int:
    rows, ch = runner.resolved(P, chapter)
    probed = _probe_all(P, rows)
    if keys_only:
        for r, key, _ in probed:
            print(f"{r.label} [{r.model}, seed {r.seed}, {r.limit} items]\t{key or 'after ' + ', '.join(r.waits())}")
        return 0
    where = _chapters(P, ch)
    est = runner.known_costs(P, chapter)
    cached = 0
    for r, key, x in probed:
        if x is not None:
            cached += 1
            s, measured = runner.cost_s(x)
            cost = _minutes(s) if measured else _minutes(runner.estimate(est, r)) + " (estimated: GPU row)"
        else:
            cost = _minutes(runner.estimate(est, r)) + " (estimated)"
        state = "cached" if x is not None else "missing" if key else "waits on " + ", ".join(r.waits())
        print(f"{where.get(_ident(r), '-'):<12} {r.label:<44.44} {r.model:<13} seed {r.seed} "
              f"{str(r.limit):>4} items  {key or '-':<16} {state:<8} {cost}")
    left = sum(runner.estimate(est, r) for r, _, x in probed if x is None)
    print(f"{len(rows)} rows: {cached} cached, {len(rows) - cached} missing"
          + (f", about {left / 3600:.1f} h left on 2 cores (estimated)" if left else ""))
    return 0


def _missing(P: plan.Params, chapter: str | None) -> tuple[list[plan.Row], list[plan.Row]]:
    """(the rows to compute, one per key; every row of the plan)."""
    rows, _ = runner.resolved(P, chapter)
    missing: dict[str, plan.Row] = {}  # by key: a result two rows declare is computed once
    for r in rows:
        key, record = (None, True) if r.waits() else runner.probe(r, P)
        if record is None:
            missing.setdefault(key, r)
    return list(missing.values()), rows


def _left(todo: list[plan.Row], rows: list[plan.Row], guess) -> int:
    """Estimated seconds still to compute: the missing rows and those still waiting on a choice."""
    return round(sum(guess(r) for r in todo) + sum(guess(r) for r in rows if r.waits()))


def _progress(P: plan.Params, chapter: str | None, desc: str, disable: bool = False):
    """(a progress bar over the estimated seconds of the rows still to compute, a row's estimate)."""
    from tqdm.auto import tqdm

    guess = functools.partial(runner.estimate, runner.known_costs(P, chapter))
    todo, rows = _missing(P, chapter)
    return tqdm(total=_left(todo, rows, guess), unit="s", desc=desc, disable=disable), guess


def _wall_s(seconds_on_2_cores: float) -> float:
    """A row's expected wall time in this process: its 2-core seconds are half its CPU seconds."""
    import torch

    return 2 * seconds_on_2_cores / max(1, torch.get_num_threads())


def _timed(r: plan.Row) -> bool:
    """A row that measures speed: computed alone on the machine, with every core."""
    return r.kind in ("speed", "speed-row")


def _next(todo: list[plan.Row], fits) -> list[plan.Row]:
    """The rows to try now, in plan order: those that fit the deadline, rows that measure speed only once no other
    is missing (they wait for the machine to themselves, so they go last)."""
    return [r for r in todo if fits(r) and not _timed(r)] or [r for r in todo if fits(r)]


@contextlib.contextmanager
def _machine(alone: bool):
    """Share the machine with the other workers, or have it alone with every core (a row that measures speed):
    such a row stops new rows from starting, waits for those in progress, and runs with every core. Flocks on two
    files under the results folder's `.claims/`: `wanted` (held exclusively by a timed row, so new rows wait)
    and `machine` (shared by every row in progress)."""
    import fcntl

    import torch

    folder = results.results_dir() / ".claims"
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    with open(folder / "wanted", "a") as wanted, open(folder / "machine", "a") as machine:
        fcntl.flock(wanted, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(wanted, fcntl.LOCK_UN)
        fcntl.flock(machine, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if alone:
            torch.set_num_threads(len(os.sched_getaffinity(0)))
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def run(P: plan.Params, chapter: str | None, quiet_bar: bool = False, deadline: float | None = None) -> int:
    """Compute missing rows in plan order until none is left; a search's later rows appear once it can propose them.
    Rows another process has claimed are left to it (this one waits when nothing else is left). With a `deadline`
    (epoch seconds), a row expected to end after it is not started: a session of known length loses no work.
    Rows that measure speed come last, each alone on the machine (`_machine`)."""
    bar, guess = _progress(P, chapter, "plan (estimated s)", disable=quiet_bar)
    slow: dict[tuple, float] = {}  # upper-quartile costs: with medians, half the rows would overrun the deadline
    fits = lambda r: deadline is None or time.time() + _wall_s(runner.estimate(slow, r)) <= deadline  # noqa: E731
    done, measured_at = 0, -1  # how many rows were missing when `slow` was last measured
    while True:
        todo, rows = _missing(P, chapter)
        if deadline is not None and len(todo) != measured_at:  # a row computed anywhere is all that changes it,
            slow, measured_at = runner.known_costs(P, chapter, q=0.75), len(todo)  # and a look costs ~8 s of CPU
        if not any(fits(r) for r in todo):
            break
        bar.n = max(0, bar.total - _left(todo, rows, guess))  # what any worker finished counts
        bar.refresh()
        took = False
        for r in _next(todo, fits):
            if not fits(r):  # the rows before it in this pass took the time
                continue
            key, record = runner.probe(r, P)
            if record is not None:  # another worker made it meanwhile
                continue
            with results.claim(key) as mine:
                if not mine:  # another worker's
                    continue
                took = True
                bar.set_postfix_str(f"{r.label} seed {r.seed}")
                t0 = time.time()
                with _machine(alone=_timed(r)):
                    runner.read(r, P, compute=True)
                done += 1
                bar.update(round(guess(r)))
                bar.write(f"[{done}] {r.label} ({r.model}, seed {r.seed}, {r.limit} items): {time.time() - t0:.0f} s")
        if not took:  # every missing row is another worker's: wait for it
            time.sleep(10)
    bar.close()
    waiting = [r for r in rows if r.waits()]
    late = f"; {len(todo)} left, expected to end after the deadline" if todo else ""
    print(f"computed {done} rows; {len(waiting)} still wait on a choice{late}" if waiting
          else f"computed {done} rows{late}")
    return 1 if waiting or todo else 0


def run_workers(argv: list[str], n: int, P: plan.Params, chapter: str | None) -> int:
    """`n` worker processes of `run` (cores / n threads each); this process shows the whole plan's progress."""
    threads = max(1, len(os.sched_getaffinity(0)) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TRSP_WORKER": "1", "TQDM_DISABLE": "1"}  # one bar: this one
    procs = [subprocess.Popen([sys.executable, "-m", "study", *argv, "--workers", "1"], env=env) for _ in range(n)]
    bar, guess = _progress(P, chapter, f"plan, {n} workers (estimated s)")
    try:
        last = time.time()
        while any(p.poll() is None for p in procs):
            time.sleep(1)
            if time.time() - last > 300:  # a look at the whole plan costs ~8 s of CPU
                todo, rows = _missing(P, chapter)
                bar.n, last = max(0, bar.total - _left(todo, rows, guess)), time.time()
                bar.refresh()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        bar.close()
    return max(p.wait() for p in procs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study", description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=("status", "keys", "run"))
    ap.add_argument("--chapter", help=f"one chapter: {', '.join(plan.CHAPTERS)}")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a study parameter (plan.Params), e.g. calib=news or 'seeds=[0, 1]'")
    ap.add_argument("--workers", type=int, default=1, metavar="N",
                    help="run: N processes sharing the missing rows (cores / N threads each)")
    ap.add_argument("--hours", type=float, metavar="H",
                    help="run: start no row expected to end more than H hours from now (a session of known length)")
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # --hours as epoch seconds, for the workers
    ap.add_argument("--profile-book", metavar="NAME", help="start from a book profile of book/params.yaml (tiny)")
    a = ap.parse_args(argv)
    try:
        P = plan.Params.of(**book_params(a.profile_book)).set(a.set)
        if a.chapter is not None and a.chapter not in plan.CHAPTERS:
            raise ValueError(f"unknown chapter {a.chapter!r}; chapters with rows: {', '.join(plan.CHAPTERS)}")
        if a.workers < 1:
            raise ValueError(f"--workers {a.workers}: give 1 or more")
        if a.hours is not None and a.hours <= 0:
            raise ValueError(f"--hours {a.hours}: give a positive number of hours")
        deadline = a.deadline or (time.time() + 3600 * a.hours if a.hours else None)
        if a.command == "run" and a.workers > 1:
            again = ["run", *(["--chapter", a.chapter] if a.chapter else []), *[y for x in a.set for y in ("--set", x)],
                     *(["--profile-book", a.profile_book] if a.profile_book else []),
                     *(["--deadline", str(deadline)] if deadline else [])]
            return run_workers(again, a.workers, P, a.chapter)
        if a.command == "run":
            return run(P, a.chapter, quiet_bar=os.environ.get("TRSP_WORKER") == "1", deadline=deadline)
        return status(P, a.chapter, keys_only=a.command == "keys")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def book_params(name: str | None) -> dict:
    """The study parameters of a book profile (`book/params.yaml`'s `_study` entry), with its environment applied."""
    if not name:
        return {}
    import yaml

    from trsp_lib.provenance import REPO

    profiles = yaml.safe_load((REPO / "book" / "params.yaml").read_text())
    if name not in profiles:
        raise ValueError(f"unknown book profile {name!r}; choose from {', '.join(profiles)}")
    env = profiles[name].get("_env") or {}
    for k, v in env.items():  # a results directory already set (a test's, a regeneration's) wins
        os.environ.setdefault(k, str(REPO / v) if k == "TRSP_RESULTS" else str(v))
    return dict(profiles[name].get("_study") or {})


if __name__ == "__main__":
    sys.exit(main())
