"""Shared fixtures: a saved tiny model with a character tokenizer, built offline."""
import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved 6-layer tiny Llama with the character tokenizer, loadable by path like any HF model."""
    from trsp_lib.tiny import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model = tiny_model("llama", n_layers=6)
    tok = tiny_tokenizer()
    assert model.config.vocab_size >= len(tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
