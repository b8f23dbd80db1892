"""The speed module: FLOP counts are exact arithmetic; timing runs are only checked for shape."""
import copy

import pytest

from trsp_lib.tiny import tiny_model
from trsp_lib.removal import remove_layers
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


def test_compare_speed_reports_medians_ratios_and_the_ideal():
    dense = tiny_model("llama", n_layers=4)
    pruned = remove_layers(copy.deepcopy(dense), [1])
    out = compare_speed(dense, pruned, prefill_len=16, gen_batch=2, prompt_len=4, new_tokens=3, reps=2, warmup=1)
    for name in ("dense", "pruned"):
        assert out[name]["prefill"]["n"] == 2 and out[name]["generate"]["median"] > 0
        assert out[name]["generate"]["tokens_per_s"] > 0
    assert out["speedup"]["prefill"] > 0 and out["ideal"]["generate"] > 1
    with pytest.raises(ValueError, match="reps must be"):
        compare_speed(dense, pruned, reps=0)
