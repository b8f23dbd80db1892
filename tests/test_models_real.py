"""The embedded SmolLM2-135M: converted once from its GGUF, then loaded as a plain checkpoint."""
import pytest
import torch

from trsp_lib.adapters import get_layers


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
