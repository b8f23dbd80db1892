"""The speed module: FLOP counts are exact arithmetic; timing runs are checked with a stand-in clock."""
import copy

import pytest

from trsp_lib.tiny import tiny_model
from trsp_lib.surgery.removal import remove_layers
from trsp_lib.speed import compare_speed, forward_flops, ideal_speedup


def test_flops_scale_with_the_layers_kept():
    dense = tiny_model("llama", n_layers=4)
    pruned = remove_layers(copy.deepcopy(dense), [1, 2])
    s = 16
    per_layer = (forward_flops(dense, s) - forward_flops(pruned, s)) / 2
    head = 2 * s * dense.get_output_embeddings().weight.numel()
    assert forward_flops(pruned, s) == pytest.approx(head + 2 * per_layer)
    assert 1.0 < ideal_speedup(dense, pruned, s) < 2.0  # the LM head is not pruned
    assert ideal_speedup(dense, dense, s) == 1.0


def test_compare_speed_interleaves_drops_the_warmup_and_takes_medians(monkeypatch):
    import trsp_lib.speed as speed

    dense = tiny_model("llama", n_layers=4)
    pruned = remove_layers(copy.deepcopy(dense), [1])
    clock = iter([100.0, 100.0, 100.0, 100.0,            # warm-up: dense prefill/generate, pruned prefill/generate
                  4.0, 8.0, 2.0, 5.0, 6.0, 8.0, 2.0, 3.0, 5.0, 8.0, 2.0, 4.0])  # three repetitions, interleaved
    calls = []

    def fake_timed(fn, device):
        calls.append(fn.__code__.co_names)
        return next(clock)

    monkeypatch.setattr(speed, "_timed", fake_timed)
    out = compare_speed(dense, pruned, prefill_len=16, gen_batch=2, prompt_len=4, new_tokens=3, reps=3, warmup=1)
    assert out["dense"]["prefill"] == {"median": 5.0, "min": 4.0, "max": 6.0, "n": 3}   # 100 s warm-up dropped
    assert out["pruned"]["generate"]["median"] == 4.0 and out["dense"]["generate"]["median"] == 8.0
    assert out["speedup"] == {"prefill": 2.5, "generate": 2.0}
    assert out["dense"]["generate"]["tokens_per_s"] == 2 * 3 / 8.0
    assert out["ideal"]["prefill"] == ideal_speedup(dense, pruned, 16) > 1
    assert len(calls) == 16
    with pytest.raises(ValueError, match="reps must be"):
        compare_speed(dense, pruned, reps=0)
