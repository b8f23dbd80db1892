"""The embedded SmolLM2-135M: converted once from its GGUF, then loaded as a plain checkpoint."""
import pytest
import torch

from trsp_lib.surgery.adapters import get_layers


@pytest.mark.slow
@pytest.mark.smoke
def test_smollm2_loads_and_generates():
    from trsp_lib.models import load_model

    model, tok = load_model("smollm2-135m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert len(get_layers(model)) == 30 and model.config.num_hidden_layers == 30
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 4)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


@pytest.mark.slow
def test_gemma3_builtin_loads_and_keeps_layer_types_consistent_after_removal(tmp_path):
    """The second built-in (Gemma Terms of Use): 18 layers mixing sliding and full attention."""
    from transformers import AutoModelForCausalLM

    from trsp_lib.models import load_model
    from trsp_lib.surgery.removal import remove_layers, save_model

    model, tok = load_model("gemma3-270m")
    types = list(model.config.layer_types)
    assert len(get_layers(model)) == 18 and set(types) == {"sliding_attention", "full_attention"}
    remove_layers(model, [5, 6])  # 5 is a full-attention layer
    assert model.config.layer_types == types[:5] + types[7:] and model.config.num_hidden_layers == 16
    save_model(model, tok, tmp_path / "g")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "g")
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-4)
