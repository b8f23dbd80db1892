"""Every committed result stays valid: the notebooks' calls find every committed row, computing nothing.

The calls are the book's default profile: each notebook's `parameters` cell, read from the notebook,
and the calls its code makes. The models are never loaded: the tokenizer (its BOS behaviour is all
the keys see) and the layer count are stand-ins with the real models' values. A refactor that changes
how a key is built makes a committed row "not computed yet" here, so this test fails before any
notebook would start recomputing.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "data" / "results"
N_LAYERS = {"smollm2-135m": 30, "gemma3-270m": 18}
BOS = {"smollm2-135m": False, "gemma3-270m": True}  # Gemma's tokenizer starts a sequence with <bos>


def notebook_params(name: str) -> dict:
    """The defaults of a notebook's `parameters` cell (what the default book profile runs)."""
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    scope: dict = {}
    exec("".join(cell["source"]), scope)
    return {k: v for k, v in scope.items() if not k.startswith("__")}


class _StandInTokenizer:
    """What `data.bos_prefix` asks of a tokenizer: its BOS id and how it starts a sequence."""

    def __init__(self, bos: bool):
        self.bos_token_id = 1
        self._bos = bos

    def __call__(self, text: str, **_):
        return {"input_ids": ([1] if self._bos else []) + [5]}


@pytest.fixture()
def committed(monkeypatch):
    """The committed results directory, read-only use, with the models replaced by their stand-ins."""
    monkeypatch.delenv("TRSP_RESULTS", raising=False)
    monkeypatch.delenv("TRSP_FRESH", raising=False)
    monkeypatch.delenv("TRSP_QUIET", raising=False)  # "not computed" is read from the library's messages

    def load_tokenizer(name):
        return _StandInTokenizer(BOS[name])

    def count_layers(name):
        return N_LAYERS[name]

    def no_model(*a, **k):
        raise AssertionError("a cached_only run must not load a model")

    import trsp_lib  # noqa: F401  (the modules below import their helpers by name)
    import trsp_lib.compare  # noqa: F401
    for mod in [m for n, m in list(sys.modules.items()) if n.startswith("trsp_lib")]:
        for name, fake in (("load_tokenizer", load_tokenizer), ("count_layers", count_layers),
                           ("load_model", no_model)):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, fake)
    before = sorted(p.name for p in RESULTS.rglob("*.json"))
    yield RESULTS
    assert sorted(p.name for p in RESULTS.rglob("*.json")) == before  # nothing written


def study_calls() -> list[dict]:
    """Every `compare` call the default book makes (notebooks 02, 03, 04, 05, 07), as keyword arguments,
    with each notebook's calibration and evaluation texts (every key records them)."""
    common = {"ratios": [0.25], "profile": "default"}
    calls = []
    p = notebook_params("02_trsp")
    calls.append({**common, "model": p["model"], "methods": ["trsp"], "finetune_baselines": False, "limit": p["limit"],
                  "overrides": {"calib": p["calib"], **p["overrides"], "seed": p["seed"], "device": p["device"]},
                  "speed": False, "eval_texts": p["eval_texts"]})
    p = notebook_params("03_importance")
    calls.append({**common, "model": p["model"], "methods": p["methods"], "finetune_baselines": False,
                  "limit": p["limit"], "criterion_samples": p["criterion_samples"],
                  "overrides": {"seed": p["seed"], "device": p["device"], "calib": p["calib"]}, "speed": False,
                  "eval_texts": p["eval_texts"]})
    for nb in ("04_baselines", "07_paper_and_us"):
        p = notebook_params(nb)
        ov = {"seed": p["seed"], "device": p["device"], "calib": p["calib"]}
        calls.append({**common, "model": p["model"], "methods": p["methods"],
                      "finetune_baselines": p.get("finetune", True), "limit": p["limit"],
                      "criterion_samples": p["criterion_samples"], "overrides": ov, "eval_texts": p["eval_texts"]})
        calls.append({**common, "model": p["second_model"], "methods": p["second_methods"],
                      "finetune_baselines": p["second_finetune"], "limit": p["limit"],
                      "criterion_samples": p["second_criterion_samples"], "overrides": ov,
                      "eval_texts": p["eval_texts"]})
    p = notebook_params("04_baselines")
    for s in p["seeds"]:
        calls.append({**common, "model": p["model"], "ratios": p["sweep_ratios"], "methods": p["sweep_methods"],
                      "finetune_baselines": True, "limit": p["limit"], "criterion_samples": p["criterion_samples"],
                      "overrides": {"seed": s, "device": p["device"], "calib": p["calib"]}, "speed": False,
                      "eval_texts": p["eval_texts"]})
    p = notebook_params("05_ablations")
    for over in p["ablations"].values():
        calls.append({**common, "model": p["model"], "methods": ["trsp"], "finetune_baselines": False,
                      "limit": p["limit"] if over else p["default_limit"],
                      "overrides": {"seed": p["seed"], "device": p["device"], "calib": p["calib"], **over},
                      "speed": False, "eval_texts": p["eval_texts"]})
    p = notebook_params("07_paper_and_us")
    for over in ({"one_shot": True}, {"stage2_steps": 0}, {"lambda2": 0.0}):
        calls.append({**common, "model": p["model"], "methods": ["trsp"], "finetune_baselines": False, "limit": 0,
                      "overrides": {"seed": p["seed"], "device": p["device"], "calib": p["calib"], **over},
                      "speed": False, "eval_texts": p["eval_texts"]})
    return calls


def test_every_committed_row_is_found_by_the_notebooks_calls(committed, capsys):
    from trsp_lib.compare import compare

    found: set[str] = set()
    for call in study_calls():
        rows = compare(cached_only=True, **call)
        printed = capsys.readouterr().out
        assert "not computed" not in printed, f"{call}: {printed}"
        if call.get("speed", True):
            assert all("speedup_prefill" in r for r in rows), f"speed row missing for {call}"
        found |= {r["key"] for r in rows}
    from study.frontier import study

    p = notebook_params("09_instead")  # the frontier chapter: its searches and pipelines
    run = study(p["model"], p["ratio"], p["selections"], p["search_selection"], p["lin_grid"], p["heal_grid"],
                p["lin_pipelines"], p["healed_pipelines"], heal_edge=p["heal_edge"], heal_scope=p["heal_scope"],
                profile=p["profile"], limit=p["limit"], criterion_samples=p["criterion_samples"], cached_only=True,
                eval_texts=p["eval_texts"],
                overrides={"seed": p["seed"], "device": p["device"], "calib": p["calib"]})
    assert "not computed" not in capsys.readouterr().out
    found |= {r["key"] for r in run["rows"]} | {r["key"] for r in run["searched"]}
    if p["kd_selections"]:  # the frontier chapter's + distillation beside + fine-tune
        from study import evidence
        from study.frontier import kd_beside_ft

        heal_lr = evidence.choices(p["model"], p["ratio"], {"device": p["device"]}, profile=p["profile"],
                                   cached_only=True)["heal_lr"]
        tuned_ft = {sel: {"heal": {"lr": lr}, "limit": p["main_limit"]} for sel, lr in heal_lr.items()}
        pairs, read = kd_beside_ft(p["kd_selections"], run["lin"], run["kd"], tuned_ft=tuned_ft, model=p["model"],
                                   profile=p["profile"],
                             limit=p["limit"], criterion_samples=p["criterion_samples"], cached_only=True,
                             overrides={"seed": p["seed"], "device": p["device"], "calib": p["calib"]},
                             eval_texts=p["eval_texts"])
        assert len(pairs) == len(p["kd_selections"].split(",")) and "not computed" not in capsys.readouterr().out
        found |= {r["key"] for r in read}
    if p["second_model"] and p["second_pipelines"]:  # the frontier chapter's second architecture
        from study.frontier import second_model

        rows = second_model(p["second_model"], p["second_methods"], p["second_finetune"], p["second_pipelines"],
                            run["lin"], run["kd"], at_profile_lr=p["second_at_profile_lr"], profile=p["profile"],
                            limit=p["limit"], cached_only=True,
                            criterion_samples=p["second_criterion_samples"], eval_texts=p["eval_texts"],
                            overrides={"seed": p["seed"], "device": p["device"], "calib": p["calib"]})
        assert "not computed" not in capsys.readouterr().out
        found |= {r["key"] for r in rows}
    from study import evidence

    p = notebook_params("07_paper_and_us")  # the main rows (00, 05 and 07 make the same calls) and their choices
    machine = {"device": p["device"]}
    chosen = evidence.choices(p["model"], p["ratio"], machine, profile=p["profile"], cached_only=True)
    main = evidence.main_rows(chosen["tuned"], chosen["heal_lr"], chosen["lin"], chosen["kd"],
                              seeds=tuple(p["main_seeds"]), limit=p["main_limit"], model=p["model"], ratio=p["ratio"],
                              machine=machine,
                              profile=p["profile"], tuned_seeds=tuple(p["tuned_seeds"]),
                              tuned_zs_seeds=tuple(p["tuned_zs_seeds"]), kd_seeds=tuple(p["kd_seeds"]),
                              cached_only=True)
    assert "not computed" not in capsys.readouterr().out
    from trsp_lib.profiles import CPU_EVAL, get_profile
    assert get_profile("tuned") == {**CPU_EVAL, **chosen["tuned"]}  # the profile is the validation search's winner
    found |= {r["key"] for r in chosen["rows"]} | {r["key"] for rows in main.values() for r in rows}
    rows_on_disk = [p for p in committed.glob("compare-*/rows/*.json") if not p.name.startswith("speed-")]
    assert rows_on_disk
    assert sorted(p.name for p in rows_on_disk if p.stem.rsplit("-", 1)[1] not in found) == []


def test_every_committed_notebook_result_is_found(committed):
    """Chapter 3's layer scores and chapter 6's speed runs (the `results.cached` kinds)."""
    from trsp_lib.data import window_key
    from trsp_lib.results import cached
    from trsp_lib.method.trsp import TRSPConfig

    def compute():
        raise AssertionError("a committed result was not found: its key changed")

    p = notebook_params("03_importance")
    cfg = TRSPConfig(calib=p["calib"])
    scores = cached("layer_scores", {"model": p["model"], "calib": [cfg.calib, cfg.n_samples, cfg.seq_len, p["seed"]],
                                     "criterion_samples": p["criterion_samples"],
                                     **window_key(_StandInTokenizer(BOS[p["model"]]))}, compute)
    assert set(scores) == {"shortgpt", "angular", "ppl", "taylor"}
    p = notebook_params("06_speed")
    params = {k: p[k] for k in ("model", "device", "prefill_len", "gen_batch", "prompt_len", "new_tokens", "reps",
                                "seed")}
    runs = [cached("speed", {**params, "ratio": r}, compute) for r in p["ratios"]]
    assert [r["n_removed"] for r in runs] == [4, 8, 11, 15]
    assert len(list((committed / "speed").glob("*.json"))) == len(runs)
