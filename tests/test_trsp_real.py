"""TRSP end to end on the real embedded model (SmolLM2-135M), with a budget of seconds."""
import pytest
from transformers import AutoModelForCausalLM

from trsp_lib.data import calibration_batches, eval_tokens
from trsp_lib.evaluation import perplexity
from trsp_lib.models import load_model
from trsp_lib.surgery.removal import save_model
from trsp_lib.method.trsp import TRSPConfig, prune


@pytest.mark.slow
@pytest.mark.smoke
def test_trsp_prunes_smollm2_and_the_checkpoint_reloads(tmp_path):
    model, tok = load_model("smollm2-135m")
    text = eval_tokens(tok, "wiki", max_tokens=1024)
    dense = perplexity(model, tok, text, seq_len=256)
    assert 5 < dense < 100, f"dense SmolLM2 perplexity on Wikipedia should be ~20, got {dense}"
    calib = calibration_batches(tok, n_samples=4, seq_len=64, source="wiki", seed=0)
    cfg = TRSPConfig(n_remove=2, n_samples=4, seq_len=64, batch_size=2, grad_accum=1, steps_per_round=1, stage2_steps=2)
    result = prune(model, calib, cfg)
    assert len(result.removed) == 2 and 29 not in result.removed
    pruned = perplexity(model, tok, text, seq_len=256)
    assert dense < pruned < 20 * dense  # two of 30 layers gone: worse, but not broken
    save_model(model, tok, tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert type(again).__name__ == "LlamaForCausalLM" and again.config.num_hidden_layers == 28
    assert perplexity(again, tok, text, seq_len=256) == pytest.approx(pruned, rel=1e-4)
    prompt = tok("The capital of France is", return_tensors="pt")
    out = again.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8
