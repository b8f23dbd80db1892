"""Adapters and layer removal on tiny random models of every supported architecture (seconds, offline)."""
import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from trsp_lib.surgery.adapters import ADAPTERS, UnsupportedArchitecture, get_adapter, get_layers, scale_branch_output
from trsp_lib.models import ModelNotFound, load_model
from trsp_lib.tiny import TINY_ARCHS, tiny_model, tiny_tokenizer
from trsp_lib.surgery.removal import shrink_config, remove_layers, save_model

ARCHS = ["llama", "qwen2", "mistral", "gemma3", "opt", "gpt2", "phi"]
EXTRA = [a for a in TINY_ARCHS if a not in ARCHS]  # qwen3, gemma2, gemma3-multimodal: cheap to check too
IDS = torch.randint(3, 128, (2, 10), generator=torch.Generator().manual_seed(0))


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def skip(model, indices):
    """Make layers `indices` identities in place (a decoder layer returns a tensor in transformers 5.24)."""
    for i in indices:
        get_layers(model)[i].forward = lambda hidden_states, *args, **kwargs: hidden_states
    return model


@pytest.mark.parametrize("arch", ARCHS + EXTRA)
def test_adapter_resolves_every_path(arch):
    model = tiny_model(arch, n_layers=4)
    adapter = get_adapter(model)
    assert model.config.model_type in adapter.model_types and adapter.name.startswith(arch.split("-")[0])
    assert len(get_layers(model)) == 4
    for layer in get_layers(model):
        for name in adapter.branch_outputs:
            layer.get_submodule(name)


def test_unsupported_architectures_fail_early_and_say_how_to_add_one():
    from transformers import BertConfig, BertModel, LlamaModel

    bert = BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    with pytest.raises(UnsupportedArchitecture, match=r"llama.*Adapter row") as err:
        get_adapter(bert)
    assert "gemma3_text" in str(err.value) and "'bert'" in str(err.value)
    base = LlamaModel(tiny_model("llama").config)  # no LM head: the layer path does not resolve
    with pytest.raises(UnsupportedArchitecture, match="LlamaModel"):
        get_layers(base)
    assert issubclass(UnsupportedArchitecture, ValueError)


@pytest.mark.parametrize("arch", ARCHS + EXTRA)
@pytest.mark.parametrize("c", [0.37, -1.5, 0.0])
def test_scale_branch_output_multiplies_each_branch_output_exactly(arch, c):
    model = tiny_model(arch, n_layers=2)
    adapter = get_adapter(model)
    layer = get_layers(model)[1]
    seen = {}

    def record(name):
        def hook(module, args, out):
            seen[name] = (args[0].detach().clone(), out.detach().clone())
        return hook

    hooks = [layer.get_submodule(n).register_forward_hook(record(n)) for n in adapter.branch_outputs]
    logits(model)
    for h in hooks:
        h.remove()
    assert set(seen) == set(adapter.branch_outputs)
    scale_branch_output(layer, adapter, c)
    for name, (inp, out) in seen.items():
        with torch.no_grad():
            new = layer.get_submodule(name)(inp)
        assert torch.allclose(new, c * out, rtol=1e-5, atol=1e-5 * out.abs().max().item()), name


def test_scale_branch_output_rejects_an_unknown_module_kind():
    model = tiny_model("llama", n_layers=2)
    odd = dataclasses.replace(get_adapter(model), branch_outputs=("mlp.act_fn",))
    with pytest.raises(TypeError, match="unknown module kind SiLU"):
        scale_branch_output(get_layers(model)[0], odd, 2.0)


@pytest.mark.parametrize("arch", ARCHS + EXTRA)
def test_removal_equals_skipping_and_survives_generate_and_reload(arch, tmp_path):
    model = tiny_model(arch, n_layers=4)
    expected = logits(skip(tiny_model(arch, n_layers=4), [1, 2]))
    assert not torch.allclose(expected, logits(model), atol=1e-3)  # the removed layers did matter
    config = model.config.get_text_config(decoder=True)  # the model's own config except for multimodal Gemma3
    types = getattr(config, "layer_types", None)
    remove_layers(model, [2, 1])

    layers = get_layers(model)
    assert len(layers) == 2 and config.num_hidden_layers == 2
    for new, layer in enumerate(layers):
        assert [m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")]  # some index exists
        assert all(m.layer_idx == new for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int))
    if types is not None:
        assert config.layer_types == [types[0], types[3]]
    assert torch.allclose(logits(model), expected, atol=1e-5)

    # KV-cache generation (past every sliding window) equals cache-free generation.
    prompt = IDS[:1, :8]
    cached = model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True)
    plain = model.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=False)
    assert cached.shape == (1, 13) and torch.equal(cached, plain)

    out = save_model(model, None, tmp_path / "pruned")
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    again_config = again.config.get_text_config(decoder=True)
    assert type(again) is type(model) and len(get_layers(again)) == 2 and again_config.num_hidden_layers == 2
    assert getattr(again_config, "layer_types", None) == getattr(config, "layer_types", None)
    assert torch.allclose(logits(again), expected, atol=1e-5)
    assert torch.equal(again.generate(prompt, max_new_tokens=5, do_sample=False), cached)


def test_qwen2_window_settings_follow_the_kept_layers():
    model = tiny_model("qwen2", n_layers=4)  # layers 0, 1 full attention; 2, 3 sliding (max_window_layers=2)
    remove_layers(model, [1])
    assert model.config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert model.config.max_window_layers == 1
    remove_layers(model, [1, 2])
    assert model.config.layer_types == ["full_attention"] and model.model.has_sliding_layers is False


def test_gpt2_inverse_layer_idx_scaling_is_kept_through_renumbering(tmp_path):
    model = tiny_model("gpt2", n_layers=4, scale_attn_by_inverse_layer_idx=True)
    expected = logits(skip(tiny_model("gpt2", n_layers=4, scale_attn_by_inverse_layer_idx=True), [0, 2]))
    remove_layers(model, [0, 2])
    assert torch.allclose(logits(model), expected, atol=1e-5)
    again = AutoModelForCausalLM.from_pretrained(save_model(model, None, tmp_path / "m"))
    assert torch.allclose(logits(again), expected, atol=1e-5)


def test_removal_of_a_single_trailing_layer_and_repeated_removal():
    model = tiny_model("llama", n_layers=5)
    expected = logits(skip(tiny_model("llama", n_layers=5), [0, 4]))
    remove_layers(model, [4])
    remove_layers(model, [0])  # indices refer to the current model
    assert torch.allclose(logits(model), expected, atol=1e-5)
    assert [layer.self_attn.layer_idx for layer in get_layers(model)] == [0, 1, 2]


@pytest.mark.parametrize("indices, match", [
    ([1, 1], r"duplicate layer indices \[1\]"),
    ([4], r"out of range: the model has 4 layers, numbered 0..3"),
    ([-1], "out of range"),
    ([0, 1, 2, 3], "cannot remove all 4 layers"),
    ([1.0], "must be integers"),
    (["1"], "must be integers"),
    ([True], "must be integers"),
    (3, "iterable of integers"),
])
def test_bad_indices_fail_clearly_and_change_nothing(indices, match):
    model = tiny_model("llama", n_layers=4)
    with pytest.raises(ValueError, match=match):
        remove_layers(model, indices)
    assert len(get_layers(model)) == 4 and model.config.num_hidden_layers == 4


def test_tensor_and_numpy_style_indices_are_accepted():
    import numpy as np

    model = tiny_model("llama", n_layers=4)
    remove_layers(model, torch.tensor([3, 0]))
    remove_layers(model, np.array([1]))
    assert model.config.num_hidden_layers == 1


def test_wrapped_layers_are_refused_before_anything_changes():
    from trsp_lib.surgery.gating import attach_gates

    model = tiny_model("llama", n_layers=3)
    attach_gates(model, "output")
    with pytest.raises(ValueError, match="detach them first"):
        remove_layers(model, [1])
    assert len(get_layers(model)) == 3 and model.config.num_hidden_layers == 3
    assert [layer.layer.self_attn.layer_idx for layer in get_layers(model)] == [0, 1, 2]


def test_heterogeneous_per_layer_config_is_rekeyed():
    from transformers import LlamaConfig

    cfg = LlamaConfig(num_hidden_layers=4, per_layer_config={1: {"intermediate_size": 7}, 3: {"intermediate_size": 9}})
    shrink_config(cfg, keep=[0, 3], n=4)
    assert cfg.num_hidden_layers == 2
    assert cfg.per_layer_config[1].intermediate_size == 9 and cfg.per_layer_config[0].intermediate_size != 7


def test_save_model_is_atomic_and_replaces(tmp_path):
    stale = tmp_path / ".m.tmp-999999999"  # a dead writer's leftovers
    stale.mkdir()
    (stale / "junk").write_text("x")
    model = tiny_model("llama", n_layers=2)
    out = save_model(model, tiny_tokenizer(), tmp_path / "m")
    assert out == tmp_path / "m" and (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert not stale.exists()
    remove_layers(model, [0])
    save_model(model, None, out)  # overwrites in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 1


def test_load_model_reads_a_local_directory(tmp_path):
    tiny_model("gemma3", n_layers=2).save_pretrained(tmp_path / "g")
    tiny_tokenizer().save_pretrained(tmp_path / "g")
    model, tok = load_model(str(tmp_path / "g"), dtype="float32")
    assert type(model).__name__ == "Gemma3ForCausalLM" and not model.training
    assert tok.decode(tok("abc").input_ids) == "abc"


def test_unknown_model_name_gives_a_helpful_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as err:
        load_model("no-such-model-xyz")
    msg = str(err.value)
    assert "smollm2-135m" in msg and "gemma3-270m" in msg and "local directory" in msg and "HF_HUB_OFFLINE=0" in msg


def test_adapter_table_is_consistent():
    names = [a.name for a in ADAPTERS]
    types = [t for a in ADAPTERS for t in a.model_types]
    assert len(set(names)) == len(names) and len(set(types)) == len(types)
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        tiny_model("bert")
