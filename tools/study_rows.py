"""Compute the study's rows in parallel worker processes (one GPU shared by several, or many cores).

The rows land in the one result cache (data/results/) exactly as the notebooks would write them: the
arithmetic is float32 without autocast on any device, so the keys are the CPU book's and a fresh
`make book` finds every row cached (each row's provenance names the machine that computed it).
Phase A runs everything that depends on no choice; phase B makes the declared choices on validation
(TRSP's greedy round, the frontier chapter's searches, the healing controls' lr) and then computes
the main rows with them. An interrupted run loses only the rows in flight; rerunning resumes.

    python tools/study_rows.py --device cuda --workers 8 --zs-batch 64 [--pack OUT.tar.gz]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import tarfile
import threading
import time
from pathlib import Path

def _init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    os.environ.update(TRSP_QUIET="1", TQDM_DISABLE="1")


def job(kind: str, kw: dict):
    """One unit of work in a worker: a compare call, a TRSP search point, a healing-lr search."""
    from study import searches
    from trsp_lib import compare

    fn = {"compare": compare.compare, "trsp_point": searches.trsp_point, "search_heal": searches.search_heal}[kind]
    out = fn(**kw)
    return out if kind in ("trsp_point", "search_heal") else None


class Driver:
    def __init__(self, a):
        self.a, self.t0 = a, time.time()
        self.machine = {"device": a.device, "autocast": "none"}
        self.common = {"model": a.model, "dtype": "float32", "zs_batch_size": a.zs_batch}
        self.lock = threading.Lock()
        self.pool = cf.ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn"), initializer=_init,
                                           initargs=(a.threads,))

    def many(self, jobs: list[tuple[str, dict]]) -> list:
        futures = [self.pool.submit(job, kind, kw) for kind, kw in jobs]
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except Exception as err:  # one failed row must not lose the others
                print(f"job failed: {type(err).__name__}: {err}", flush=True)
                out.append(None)
            self.pack()
        return out

    def pack(self) -> None:
        """Every result file written since the start, into one archive (what comes back from a remote run)."""
        if not self.a.pack:
            return
        with self.lock:
            self._pack()

    def _pack(self) -> None:
        from trsp_lib.results import results_dir
        root = results_dir()
        new = [p for p in root.rglob("*.json") if p.stat().st_mtime >= self.t0 - 1]
        with tarfile.open(self.a.pack + ".tmp", "w:gz") as tar:  # paths relative to the results directory
            for p in new:
                tar.add(p, arcname=str(p.relative_to(root)))
        os.replace(self.a.pack + ".tmp", self.a.pack)
        print(f"[{time.time() - self.t0:6.0f} s] {len(new)} result files packed", flush=True)

    def compare_job(self, **kw) -> tuple[str, dict]:
        over = {**self.machine, **kw.pop("overrides", {})}
        return "compare", {**self.common, "ratios": [0.25], "speed": False, "finetune_baselines": False,
                           "overrides": over, **kw}


def phase_a(d: Driver) -> None:
    from study import evidence, searches
    f = evidence.FRONTIER
    jobs = [d.compare_job(methods=[], limit=d.a.main_limit)]
    jobs += [d.compare_job(methods=["trsp", "shortgpt", "sleb"], limit=d.a.main_limit, overrides={"seed": s})
             for s in evidence.SEEDS]
    points = [{}] + [p for ps in searches.KNOBS.values() for p in ps] + searches.JOINT
    jobs += [("trsp_point", {"point": p, "machine": d.machine, "model": d.a.model, "dtype": "float32"}) for p in points]
    jobs += [("search_heal", {"selection": s, "machine": d.machine, "model": d.a.model, "dtype": "float32"})
             for s in ("shortgpt", "sleb")]
    lin0 = f["lin_grid"][0]  # committed choice of the lin search (its rows are cached)
    for h in f["heal_grid"]:
        for label in (["sleb+lin+ft"] if h["temperature"] == 1.0 else []) + ["sleb+lin+kd"]:
            jobs.append(d.compare_job(methods=["sleb"], pipelines=[label], lin=lin0, heal=h, limit=d.a.frontier_limit))
    d.many(jobs)


def phase_b(d: Driver) -> dict:
    """The choices (each read off validation rows computed in phase A), then the rows that need them; the
    TRSP search's greedy round runs in a thread beside the other rows, the tuned rows last."""
    from study import evidence, searches
    f, common = evidence.FRONTIER, {"model": d.a.model, "ratios": [0.25], "speed": False, "limit": d.a.frontier_limit,
                                    "dtype": "float32", "overrides": {**d.machine, "seed": 0, "calib": "wiki"},
                                    "zs_batch_size": d.a.zs_batch}
    heal_lr = {s: searches.search_heal(s, machine=d.machine, model=d.a.model, dtype="float32")[1]["lr"]
               for s in ("shortgpt", "sleb")}
    lin = searches.search("sleb+lin", f["lin_grid"], "lin", **common)[1]
    kd = searches.search("sleb+lin+kd", f["heal_grid"], "heal", lin=lin, **common)[1]
    ft = searches.search("sleb+lin+ft", [h for h in f["heal_grid"] if h["temperature"] == 1.0], "heal", lin=lin,
                         **common)[1]
    evaluate = lambda pts: d.many([("trsp_point", {"point": p, "machine": d.machine, "model": d.a.model,  # noqa: E731
                                                   "dtype": "float32"}) for p in pts])
    jobs = [d.compare_job(methods=f["selections"], pipelines=[label], lin=lin, heal=kd if label.endswith("kd") else ft,
                          limit=d.a.frontier_limit) for label in f["healed_pipelines"].split(",")]
    with cf.ThreadPoolExecutor(1) as thread:
        searching = thread.submit(searches.search_trsp, evaluate)
        for s in evidence.SEEDS:
            for suffix, call in evidence.main_calls({}, heal_lr, lin, kd, s, d.machine):
                if not suffix:  # the tuned TRSP rows wait for the search
                    jobs.append(d.compare_job(**{**call, "limit": d.a.main_limit}))
        d.many(jobs)
        tuned = searching.result()["best"]
    choices = {"tuned": tuned, "heal_lr": heal_lr, "lin": lin, "kd": kd, "ft": ft}
    print("choices:", json.dumps(choices), flush=True)
    d.many([d.compare_job(**{**call, "limit": d.a.main_limit}) for s in evidence.SEEDS
            for suffix, call in evidence.main_calls(tuned, heal_lr, lin, kd, s, d.machine) if suffix]
           + [d.compare_job(methods=f["selections"], finetune_baselines=True, limit=d.a.frontier_limit),
              d.compare_job(methods=f["selections"], pipelines=f["lin_pipelines"], lin=lin, limit=d.a.frontier_limit)])
    return choices


#: The frontier issue's rows still missing on the CPU book: every selection + lin, a +kd row beside each
#: comparison +ft row, and the main pipelines on the second model with SmolLM2's validation choices.
KD_BESIDE_FT = ("angular+kd", "ppl+kd", "taylor+kd", "laco+kd", "reverse+kd", "random+kd")
SECOND = {"model": "gemma3-270m", "pipelines": ("sleb+lin", "sleb+lin+kd", "trsp+lin"), "at_profile_lr": ("sleb+kd",)}


def phase_c(d: Driver) -> None:
    """Rows that need the choices but no further search: read them (cached), then compute the rest."""
    from study import evidence
    f = evidence.FRONTIER
    c = evidence.choices(d.a.model, 0.25, d.machine, frontier_limit=d.a.frontier_limit, dtype="float32")
    jobs = [d.compare_job(methods=[label.split("+")[0]], pipelines=[label], lin=c["lin"], limit=d.a.frontier_limit)
            for label in ("trsp+lin", "shortgpt+lin", "angular+lin")]
    jobs += [d.compare_job(methods=f["selections"], pipelines=[label], lin=c["lin"], heal=c["kd"],
                           limit=d.a.frontier_limit) for label in KD_BESIDE_FT]
    # the check past the grid's edge
    jobs.append(d.compare_job(methods=[f["search_selection"]], pipelines=[f"{f['search_selection']}+lin+kd"],
                              lin=c["lin"], heal=f["heal_edge"], limit=d.a.frontier_limit))
    jobs += [d.compare_job(methods=[f["search_selection"]], pipelines=[f"{f['search_selection']}+lin+kd"],
                           lin=c["lin"], heal={**c["kd"], "lr": lr, "last": f["heal_scope"]["last"]},
                           limit=d.a.frontier_limit)
             for lr in f["heal_scope"]["lrs"]]  # the healing scope's search
    jobs += [d.compare_job(model=SECOND["model"], methods=[label.split("+")[0]], pipelines=[label], lin=c["lin"],
                           heal=c["kd"], limit=d.a.frontier_limit, criterion_samples=8)
             for label in SECOND["pipelines"]]
    jobs += [d.compare_job(model=SECOND["model"], methods=[label.split("+")[0]], pipelines=[label],
                           heal={**c["kd"], "lr": None}, limit=d.a.frontier_limit, criterion_samples=8)
             for label in SECOND["at_profile_lr"]]  # the loss apart from the transferred learning rate
    d.many(jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    ap.add_argument("--zs-batch", type=int, default=8)
    ap.add_argument("--pack", default="", help="also write every new result file into this .tar.gz")
    ap.add_argument("--phases", default="ab", help="a: no choice needed; b: the choices, then the main rows; "
                                                   "c: the frontier rows still missing (after b)")
    ap.add_argument("--main-limit", type=int, default=500, help="zero-shot items per task of the main rows")
    ap.add_argument("--frontier-limit", type=int, default=50, help="... of the frontier chapter's rows")
    a = ap.parse_args()
    d = Driver(a)
    if "a" in a.phases:
        phase_a(d)
    if "b" in a.phases:
        choices = phase_b(d)
        Path(a.pack or "runs/study_rows").with_suffix(".choices.json").write_text(json.dumps(choices, indent=1))
    if "c" in a.phases:
        phase_c(d)
    d.pack()
    print(f"done in {time.time() - d.t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
