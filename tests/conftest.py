"""Shared fixtures: a character-level tokenizer and a saved tiny model, both built offline."""
import string

import pytest


def char_tokenizer():
    """A 100-symbol character tokenizer: enough to run real text through a tiny random model."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable) - set("\x0b\x0c"))
    vocab = {"<unk>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved 6-layer tiny Llama with the character tokenizer, loadable by name like any HF model."""
    from trsp_lib.models import tiny_model

    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model = tiny_model("llama", n_layers=6)
    tok = char_tokenizer()
    assert model.config.vocab_size >= len(tok), "tiny models need a vocabulary of at least 100 symbols"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
