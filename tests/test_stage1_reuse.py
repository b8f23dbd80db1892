"""Runs that differ only in stage 2 share stage 1 within a process, and give exactly what a run alone gives."""
import torch

from trsp_lib.method import trsp
from trsp_lib.method.trsp import TRSPConfig, prune
from trsp_lib.tiny import tiny_model

TINY = {"n_samples": 8, "seq_len": 16, "batch_size": 2, "grad_accum": 2, "steps_per_round": 2, "ratio": 0.5,
        "lr": 1e-3, "stage2_steps": 3}


def _run(**overrides):
    calib = torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    model = tiny_model("llama", n_layers=6)
    return prune(model, calib, TRSPConfig(**{**TINY, **overrides}))


def _same(a, b) -> None:
    assert a.removed == b.removed and a.final_scales == b.final_scales and a.identity_gap == b.identity_gap
    assert [r["loss"] for r in a.trajectory] == [r["loss"] for r in b.trajectory]
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name


def test_a_stage2_variant_reuses_stage1_and_equals_a_run_alone():
    trsp.STAGE1_MEMO.clear()
    first = _run()
    variant = _run(lambda2=0.5, stage2_fade=False)
    assert not first.timings["stage1_reused"] and variant.timings["stage1_reused"]
    trsp.STAGE1_MEMO.clear()
    alone = _run(lambda2=0.5, stage2_fade=False)
    assert not alone.timings["stage1_reused"]
    _same(variant, alone)


def test_a_stage1_change_or_weight_training_selects_again():
    trsp.STAGE1_MEMO.clear()
    _run()
    assert not _run(lambda1=0.2).timings["stage1_reused"]  # a stage-1 field
    assert not _run(seed=1).timings["stage1_reused"]  # another batch order
    assert not _run(stage1_train="all").timings["stage1_reused"]  # stage 1 trains the weights: never reused
    assert _run(stage2_steps=1).timings["stage1_reused"]


def test_a_stage1_store_shares_stage1_across_processes_exactly(tmp_path, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))
    calib = torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    trsp.STAGE1_MEMO.clear()
    first = prune(tiny_model("llama", n_layers=6), calib, TRSPConfig(**TINY), stage1_store=tmp_path / "stage1")
    assert len(list((tmp_path / "stage1").glob("*.json"))) == 1
    trsp.STAGE1_MEMO.clear()  # a new process (another worker, a later session): only the store remembers
    cfg = TRSPConfig(**{**TINY, "lambda2": 0.5})
    variant = prune(tiny_model("llama", n_layers=6), calib, cfg, stage1_store=tmp_path / "stage1")
    assert not first.timings["stage1_reused"] and variant.timings["stage1_reused"]
    trsp.STAGE1_MEMO.clear()
    _same(variant, prune(tiny_model("llama", n_layers=6), calib, cfg))
