"""Shared fixtures: a saved tiny model with a character tokenizer, built offline. And one guard: the tests
write nothing into the committed results (a test that computes must point TRSP_RESULTS or `out` elsewhere)."""
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _untracked_results() -> set[str]:
    out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "data/results"], cwd=ROOT,
                         capture_output=True, text=True)
    return set(out.stdout.split()) if out.returncode == 0 else set()


def pytest_sessionstart(session):
    session.config._results_before = _untracked_results()


def pytest_sessionfinish(session, exitstatus):
    new = _untracked_results() - getattr(session.config, "_results_before", set())
    if new:
        print(f"\nthe tests wrote into the committed results (data/results/): {sorted(new)[:5]}; "
              "point TRSP_RESULTS (or compare's out) at a temporary folder in the test that computes them")
        session.exitstatus = 1


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


N_LAYERS = {"smollm2-135m": 30, "gemma3-270m": 18}
BOS = {"smollm2-135m": False, "gemma3-270m": True}  # Gemma's tokenizer starts a sequence with <bos>


class StandInTokenizer:
    """What `data.bos_prefix` asks of a tokenizer: its BOS id and how it starts a sequence."""

    def __init__(self, bos: bool):
        self.bos_token_id = 1
        self._bos = bos

    def __call__(self, text: str, **_):
        return {"input_ids": ([1] if self._bos else []) + [5]}


@pytest.fixture()
def committed(monkeypatch):
    """The committed results directory, read-only use, with the models replaced by their stand-ins (the tokenizer's
    BOS behaviour and the layer count are all a key sees): a read that would compute fails."""
    import sys
    from pathlib import Path

    results = Path(__file__).resolve().parent.parent / "data" / "results"
    monkeypatch.delenv("TRSP_RESULTS", raising=False)
    monkeypatch.delenv("TRSP_FRESH", raising=False)

    def no_model(*a, **k):
        raise AssertionError("a cached_only run must not load a model")

    import trsp_lib  # noqa: F401  (the modules below import their helpers by name)
    import trsp_lib.compare  # noqa: F401
    for mod in [m for n, m in list(sys.modules.items()) if n.startswith("trsp_lib")]:
        for name, fake in (("load_tokenizer", lambda name: StandInTokenizer(BOS[name])),
                           ("count_layers", lambda name: N_LAYERS[name]), ("load_model", no_model)):
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, fake)
    before = sorted(p.name for p in results.rglob("*.json"))
    yield results
    assert sorted(p.name for p in results.rglob("*.json")) == before  # nothing written
