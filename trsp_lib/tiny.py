"""Tiny random models (no downloads) for the tests, the tiny build of the book and the notebooks.

Every supported architecture at hidden size 32 with a character tokenizer: seconds per run, and
numbers that mean nothing.
"""
from __future__ import annotations

import torch
from torch import nn


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
