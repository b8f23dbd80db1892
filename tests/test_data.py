"""Fast tests of the offline text (data/text/) and trsp_lib.data, with a word-level tokenizer
built here from the text itself (no download)."""
from __future__ import annotations

import collections
import os
import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from trsp_lib import data
from trsp_lib.data import CALIB, DATA_DIR, TEXTS, DataError, calibration_batches, eval_tokens, load_text

REPO = Path(__file__).resolve().parent.parent
TITLE_RE = re.compile(r"^ = (.+) = $", re.M)
DATA_DIR_OVERRIDDEN = bool(os.environ.get("TRSP_DATA_DIR"))  # as seen when trsp_lib.data was imported


def word_tokenizer(text: str) -> PreTrainedTokenizerFast:
    """WordLevel tokenizer over the words of `text` (others map to [UNK])."""
    pre = pre_tokenizers.Whitespace()
    counts = collections.Counter(w for w, _ in pre.pre_tokenize_str(text))
    vocab = {"[UNK]": 0}
    for word, _ in counts.most_common():
        vocab[word] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return word_tokenizer((DATA_DIR / CALIB["news"]).read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _no_data_dir_override(monkeypatch):
    monkeypatch.delenv("TRSP_DATA_DIR", raising=False)


def counting_file(tmp_path: Path, n: int) -> tuple[Path, PreTrainedTokenizerFast]:
    """A file 'w0 w1 ... w{n-1}' and a tokenizer with id(w_i) = i: windows must be ranges."""
    path = tmp_path / "count.txt"
    path.write_text(" ".join(f"w{i}" for i in range(n)) + "\n", encoding="utf-8")
    tk = Tokenizer(models.WordLevel({f"w{i}": i for i in range(n)} | {"[UNK]": n}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return path, PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]")


def test_data_dir_is_the_repo_data_dir():
    if not DATA_DIR_OVERRIDDEN:
        assert DATA_DIR == REPO / "data"
    assert issubclass(DataError, ValueError)


@pytest.mark.parametrize("rel,min_words", [
    ("text/wiki_calib.txt", 250_000), ("text/wiki_test.txt", 60_000),
    ("text/news_calib.txt", 20_000), ("text/news_test.txt", 20_000),
])
def test_files_exist_and_are_substantial(rel, min_words):
    path = DATA_DIR / rel
    raw = path.read_bytes()
    assert len(raw) < 5_000_000
    text = raw.decode("utf-8")
    assert len(text.split()) >= min_words
    assert "\n\n" in text and "[[" not in text and "{{" not in text


def test_wiki_splits_are_disjoint_whole_articles():
    calib = TITLE_RE.findall(load_text("wiki-calib"))
    test = TITLE_RE.findall(load_text("wiki"))
    assert len(calib) >= 60 and len(test) >= 15
    assert len(set(calib)) == len(calib) and len(set(test)) == len(test)
    assert not set(calib) & set(test)
    # about 20% of the words go to test
    n_calib, n_test = len(load_text("wiki-calib").split()), len(load_text("wiki").split())
    assert 0.15 < n_test / (n_calib + n_test) < 0.3


def test_news_splits_are_disjoint():
    calib = set((DATA_DIR / CALIB["news"]).read_text(encoding="utf-8").split("\n\n"))
    test = set(load_text("news").split("\n\n"))
    assert len(calib) >= 100 and len(test) >= 100
    assert not calib & test


@pytest.mark.parametrize("source", ["wiki", "news"])
def test_calibration_shape_dtype_and_seed(tok, source):
    a = calibration_batches(tok, n_samples=8, seq_len=64, source=source, seed=0)
    assert a.shape == (8, 64) and a.dtype == torch.long
    assert int(a.min()) >= 0 and int(a.max()) < len(tok)
    assert torch.equal(a, calibration_batches(tok, 8, 64, source=source, seed=0))
    assert not torch.equal(a, calibration_batches(tok, 8, 64, source=source, seed=1))


def test_calibration_windows_are_contiguous_slices(tmp_path):
    path, counting = counting_file(tmp_path, 500)
    batch = calibration_batches(counting, n_samples=32, seq_len=50, source=str(path), seed=3)
    assert batch.shape == (32, 50)
    assert bool((batch[:, 1:] - batch[:, :-1] == 1).all())
    assert int(batch.max()) <= 499
    # the whole text is reachable: seq_len = n - 1 is the longest allowed window
    assert calibration_batches(counting, 2, 499, source=str(path)).shape == (2, 499)


def test_seq_len_too_long_and_bad_sizes_raise(tmp_path):
    path, counting = counting_file(tmp_path, 100)
    with pytest.raises(DataError, match="seq_len=100 needs at least 101"):
        calibration_batches(counting, 1, 100, source=str(path))
    with pytest.raises(DataError, match="at least 1"):
        calibration_batches(counting, 0, 10, source=str(path))
    with pytest.raises(DataError, match="at least 1"):
        calibration_batches(counting, 4, 0, source=str(path))


def test_eval_tokens_matches_plain_tokenization(tok):
    ids = eval_tokens(tok, "news")
    assert ids.dim() == 1 and ids.dtype == torch.long
    assert ids.tolist() == tok(load_text("news"), add_special_tokens=False)["input_ids"]
    assert torch.equal(eval_tokens(tok, "news", max_tokens=100), ids[:100])
    wiki = eval_tokens(tok, "wiki", max_tokens=1000)
    assert wiki.shape == (1000,)


def test_eval_tokens_are_cached_and_safe_to_modify(tok):
    first = eval_tokens(tok, "news")
    size = len(data._TOKEN_CACHE)
    first[:] = -1  # the caller's copy, not the cache
    again = eval_tokens(tok, "news")
    assert len(data._TOKEN_CACHE) == size
    assert int(again.min()) >= 0


def test_cache_sees_an_edited_file(tmp_path):
    path, counting = counting_file(tmp_path, 50)
    assert eval_tokens(counting, str(path)).numel() == 50
    path.write_text("w1 w2 w3\n", encoding="utf-8")
    assert eval_tokens(counting, str(path)).tolist() == [1, 2, 3]


def test_missing_path_raises_helpful_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="does not exist") as err:
        load_text(str(missing))
    assert "nope.txt" in str(err.value)
    with pytest.raises(DataError):
        eval_tokens(word_tokenizer("a b c"), str(missing))


def test_missing_builtin_file_says_how_to_rebuild(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("TRSP_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"data/prepare\.py") as err:
        load_text("wiki")
    assert "wiki_test.txt" in str(err.value)
    with pytest.raises(DataError, match=r"news_calib\.txt"):
        calibration_batches(tok, 2, 8, source="news")


def test_unknown_name_lists_builtin_names():
    with pytest.raises(DataError, match="unknown text") as err:
        load_text("wikitext3")
    msg = str(err.value)
    for name in list(TEXTS) + ["wikitext2"]:
        assert repr(name) in msg


@pytest.mark.parametrize("offline", [None, "1"])
def test_wikitext2_needs_opt_in(monkeypatch, tok, offline):
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=0"):
        load_text("wikitext2")
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=0"):
        calibration_batches(tok, 2, 8, source="wikitext2-train")


def _bos_tokenizer():
    """The tiny character tokenizer, made to start every sequence with <s> like Gemma's and Llama's."""
    from tokenizers import processors

    from trsp_lib.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def test_windows_start_like_the_tokenizer_starts_a_sequence(tmp_path):
    from trsp_lib.evaluation import perplexity
    from trsp_lib.tiny import tiny_tokenizer

    plain, bos = tiny_tokenizer(), _bos_tokenizer()
    assert data.bos_prefix(plain) == [] and data.bos_prefix(bos) == [1]
    f = tmp_path / "t.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    a = calibration_batches(plain, 6, 16, source=str(f), seed=3)
    b = calibration_batches(bos, 6, 16, source=str(f), seed=3)
    assert a.shape == b.shape == (6, 16) and (a != 1).all()   # without BOS: unchanged windows of text
    assert (b[:, 0] == 1).all() and (b[:, 1:] != 1).all()     # with BOS: BOS + 15 text tokens

    seen = []

    class Recorder(torch.nn.Module):  # uniform logits: perplexity = vocabulary size whatever the input
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, use_cache=False):
            seen.append(input_ids)
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 128) + self.w})()

    ids = eval_tokens(bos, str(f), 64)
    assert abs(perplexity(Recorder(), bos, ids, seq_len=16, batch_size=8) - 128) < 1e-3
    windows = torch.cat(seen)
    assert windows.shape == (64 // 15, 16) and (windows[:, 0] == 1).all()
    assert torch.equal(windows[:, 1:].reshape(-1), ids[: 4 * 15])  # the stream, 15 tokens per window, in order


def test_validation_texts_are_whole_documents_disjoint_from_test():
    wiki_val = load_text("wiki_val")
    titles = TITLE_RE.findall(wiki_val)
    assert len(titles) == 13
    calib = (DATA_DIR / CALIB["wiki"]).read_text(encoding="utf-8")
    test_titles = set(TITLE_RE.findall(load_text("wiki")))
    for doc in re.split(r"\n\n(?= = [^=].* = \n)", wiki_val.rstrip("\n")):
        assert doc in calib  # whole calibration articles, byte for byte
    assert not set(titles) & test_titles
    news_val = set(load_text("news_val").strip().split("\n\n"))
    assert len(news_val) == 50
    for name in ("news", "news-calib"):
        other = set((DATA_DIR / (TEXTS["news"] if name == "news" else CALIB["news"]))
                    .read_text(encoding="utf-8").split("\n\n"))
        assert not news_val & other


def test_calibration_windows_never_overlap_validation_articles():
    calib_text = (DATA_DIR / CALIB["wiki"]).read_text(encoding="utf-8")
    tk = word_tokenizer(calib_text)
    spans = data._excluded_spans(tk, "wiki")
    assert len(spans) == 13 and all(a < b for a, b in spans)
    ids = data._tokens(tk, "wiki", CALIB)
    for seed in (1, 2, 3):
        starts = data.window_starts(ids.numel(), 256, 64, seed, spans).tolist()
        assert not any(s < b and a < s + 256 for s in starts for a, b in spans)
        batch = calibration_batches(tk, n_samples=64, seq_len=256, source="wiki", seed=seed)
        assert torch.equal(batch, ids[torch.tensor(starts)[:, None] + torch.arange(256)])  # what it returns


def test_redraw_keeps_windows_that_do_not_overlap():
    gen = torch.Generator().manual_seed(0)
    starts = torch.tensor([0, 50, 100])
    data._redraw_overlaps(starts, 10, [(45, 70)], 1000, gen)
    assert starts[0] == 0 and starts[2] == 100 and not (45 - 10 < int(starts[1]) < 70)
    with pytest.raises(DataError, match="shorter seq_len"):
        data._redraw_overlaps(torch.tensor([5]), 10, [(0, 1000)], 1000, gen)


@pytest.mark.smoke
@pytest.mark.slow
def test_seed_zero_windows_of_the_real_tokenizer_needed_no_redraw():
    """Every committed result used seed 0: its windows must be exactly what they were before validation existed."""
    from trsp_lib.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    ids = data._tokens(tok, "wiki", CALIB)
    spans = data._excluded_spans(tok, "wiki")
    for n in (8, 16, 64, 128):
        plain = torch.randint(0, ids.numel() - 256, (n,), generator=torch.Generator().manual_seed(0))
        assert torch.equal(data.window_starts(ids.numel(), 256, n, 0, spans), plain)
