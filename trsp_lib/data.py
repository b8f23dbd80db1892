"""Calibration batches and evaluation tokens from the committed offline text in ``data/text/``.

Why this module exists: the paper calibrates and evaluates on WikiText-2, which needs the dataset
hub. The project must run with no hub, so ``data/prepare.py`` extracts real English Wikipedia
articles and ABC news stories from the gensim wheel (see ``data/README.md``); the Wikipedia test
split plays WikiText-2's role. WikiText-2 itself stays available by name (``"wikitext2"``,
``"wikitext2-train"``) for users who opt in to the hub with ``HF_HUB_OFFLINE=0``.

Built-in names:

* evaluation (``load_text`` / ``eval_tokens``): ``"wiki"`` (Wikipedia test split), ``"news"``
  (news test split), ``"wiki_val"`` / ``"news_val"`` (validation: every tuning decision is taken on
  these, never on test), ``"wiki-calib"`` (the Wikipedia calibration split, for diagnostics);
* calibration (``calibration_batches``): ``"wiki"`` and ``"news"``, each disjoint from the test
  split of the same name, so a calibration-domain ablation leaks no test text. Anything else is
  read as a path to a UTF-8 text file.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["DATA_DIR", "TEXTS", "CALIB", "WIKITEXT2", "DataError", "data_dir", "load_text", "calibration_batches",
           "eval_tokens"]

#: The repository's data directory; ``TRSP_DATA_DIR`` overrides it (also read at call time).
DATA_DIR: Path = Path(os.environ.get("TRSP_DATA_DIR") or Path(__file__).resolve().parent.parent / "data")

#: Evaluation texts, relative to the data directory.
TEXTS: dict[str, str] = {
    "wiki": "text/wiki_test.txt",
    "news": "text/news_test.txt",
    "wiki-calib": "text/wiki_calib.txt",
    "wiki_val": "text/wiki_val.txt",  # 13 whole calibration articles no committed calibration window touches
    "news_val": "text/news_val.txt",  # 50 ABC stories from a second file (lee.cor), disjoint from both news splits
}

#: Validation texts that lie inside a calibration text: its windows must never overlap them.
CALIB_EXCLUDE: dict[str, str] = {"wiki": "text/wiki_val.txt"}

#: Calibration texts, relative to the data directory; disjoint from ``TEXTS`` of the same name.
CALIB: dict[str, str] = {"wiki": "text/wiki_calib.txt", "news": "text/news_calib.txt"}

#: WikiText-2 (raw) splits by name; loaded from the hub only after an explicit opt-in.
WIKITEXT2: dict[str, str] = {"wikitext2": "test", "wikitext2-train": "train", "wikitext2-validation": "validation"}

PREPARE_HINT = ".venv/bin/python data/prepare.py"

# Texts longer than this are tokenized in pieces (split after blank lines) to bound memory.
# Shorter ones - every built-in text - go in one call: piecewise tokenization is not exactly the
# whole-text tokenization (e.g. GPT-2's byte-level BPE merges " \n\n" differently at a piece end),
# and perplexity must see the same token stream as the standard "\n\n".join(...) protocol.
# One call on the 2.2 MB calibration text takes about 2 s, once per process (see the cache).
_WHOLE_TEXT_CHARS = 8_000_000
_PIECE_CHARS = 1_000_000

# (tokenizer fingerprint, text identity) -> 1-D int64 token ids; makes repeated calls free.
_TOKEN_CACHE: dict[tuple, torch.Tensor] = {}


class DataError(ValueError):
    """A text that cannot be found or used; the message says what to do about it."""


def data_dir() -> Path:
    """The data directory now: ``TRSP_DATA_DIR`` if set (even after import), else ``DATA_DIR``."""
    env = os.environ.get("TRSP_DATA_DIR")
    return Path(env) if env else DATA_DIR


def _builtin_names() -> str:
    return (f"evaluation texts {sorted(TEXTS)}, calibration texts {sorted(CALIB)}, "
            f"hub texts {sorted(WIKITEXT2)} (with HF_HUB_OFFLINE=0)")


def _read(path: Path, builtin: bool) -> str:
    if not path.is_file():
        if builtin:
            raise DataError(f"data file {path} is missing; rebuild it with `{PREPARE_HINT}` from the "
                            f"repository root (or set TRSP_DATA_DIR to the directory that holds text/)")
        raise DataError(f"text file {path} does not exist; check the path (built-in names: {_builtin_names()})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"text file {path} is not UTF-8 text ({err})") from err
    if not text.strip():
        raise DataError(f"text file {path} is empty" + (f"; rebuild it with `{PREPARE_HINT}`" if builtin else ""))
    return text


def _wikitext2(name: str) -> str:
    """WikiText-2 raw, rows joined by "\\n\\n" (the usual perplexity protocol); hub opt-in only."""
    if os.environ.get("HF_HUB_OFFLINE") != "0":
        raise DataError(f"{name!r} is WikiText-2 from the Hugging Face dataset hub, which is off by default; "
                        f"opt in with HF_HUB_OFFLINE=0 (and network access), or use the offline "
                        f"Wikipedia split 'wiki' that plays its role")
    # The user opted in; the Makefile's HF_DATASETS_OFFLINE=1 would otherwise keep `datasets` offline.
    os.environ["HF_DATASETS_OFFLINE"] = "0"
    try:
        import datasets
    except ImportError as err:
        raise DataError(f"{name!r} needs the `datasets` package (pip install datasets)") from err
    try:
        rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=WIKITEXT2[name])["text"]
    except Exception as err:  # network, auth, cache: all end the same way for the user
        raise DataError(f"could not load WikiText-2 ({WIKITEXT2[name]} split) from the hub: {err}") from err
    return "\n\n".join(rows)


def _locate(name_or_path: str, table: dict[str, str]) -> tuple[Path | None, str | None]:
    """(file, None) for a built-in name or an existing path, (None, hub name) for WikiText-2."""
    if name_or_path in table:
        return data_dir() / table[name_or_path], None
    if name_or_path in WIKITEXT2:
        return None, name_or_path
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path, None
    if not path.is_absolute() and (data_dir() / path).is_file():
        return data_dir() / path, None
    looks_like_path = os.sep in name_or_path or "/" in name_or_path or path.suffix != ""
    if looks_like_path:
        raise DataError(f"text file {path} does not exist; check the path, or run `{PREPARE_HINT}` "
                        f"if it is one of the built-in files (built-in names: {_builtin_names()})")
    raise DataError(f"unknown text {name_or_path!r}: not a file and not a built-in name; built-in names are "
                    f"{_builtin_names()}")


def load_text(name_or_path: str) -> str:
    """The evaluation text for a built-in name (``TEXTS``, ``WIKITEXT2``) or a UTF-8 file path.

    Documents in the built-in files are already separated by blank lines, WikiText-style.
    """
    path, hub = _locate(str(name_or_path), TEXTS)
    if hub is not None:
        return _wikitext2(hub)
    return _read(path, builtin=str(name_or_path) in TEXTS)


def _file_identity(path: Path) -> tuple:
    st = path.stat()
    return ("file", str(path.resolve()), st.st_mtime_ns, st.st_size)


def _tokenizer_key(tokenizer: Any) -> tuple:
    """Identifies a tokenizer for the cache: its name (plus a vocabulary hash when it has none)."""
    name = getattr(tokenizer, "name_or_path", "") or ""
    key: tuple = (type(tokenizer).__name__, name, len(tokenizer))
    if not name:  # in-memory tokenizers (tests) share the empty name; tell them apart by vocabulary
        key += (hash(tuple(sorted(tokenizer.get_vocab().items()))),)
    return key


def _pieces(text: str) -> list[str]:
    """Pieces of about _PIECE_CHARS characters, each ending after a blank line."""
    out, cur, size = [], [], 0
    for part in re.split(r"(?<=\n\n)", text):
        cur.append(part)
        size += len(part)
        if size >= _PIECE_CHARS:
            out.append("".join(cur))
            cur, size = [], 0
    if cur:
        out.append("".join(cur))
    return out


def _tokens(tokenizer: Any, name_or_path: str, table: dict[str, str]) -> torch.Tensor:
    """All token ids of a text (no special tokens), cached per (tokenizer, text identity); the identity of a file
    includes its mtime and size, so an edited file is tokenized again."""
    path, hub = _locate(str(name_or_path), table)
    if path is not None and not path.is_file():
        _read(path, builtin=str(name_or_path) in table)  # raises the helpful DataError
    identity = ("hub", hub) if hub is not None else _file_identity(path)
    key = (_tokenizer_key(tokenizer), identity)
    ids = _TOKEN_CACHE.get(key)
    if ids is None:
        text = _wikitext2(hub) if hub is not None else _read(path, builtin=str(name_or_path) in table)
        pieces = [text] if len(text) <= _WHOLE_TEXT_CHARS else _pieces(text)
        # verbose=False: a long text is expected to exceed model_max_length; windows are cut later.
        enc = tokenizer(pieces, add_special_tokens=False, verbose=False)["input_ids"]
        ids = torch.tensor([i for piece in enc for i in piece], dtype=torch.long)
        _TOKEN_CACHE[key] = ids
    return ids


def bos_prefix(tokenizer: Any) -> list[int]:
    """[BOS] if the tokenizer starts every sequence with it (Gemma, Llama), else [] (SmolLM2, GPT-2).

    Calibration and evaluation windows are cut from one token stream, but each window is a separate
    sequence to the model, so it starts the way the tokenizer starts one. It matters: Gemma-3-270m's
    perplexity on the study's wiki test tokens (32 windows of 512) is 61.6 without its <bos> and 27.0
    with it (the dense rows of `trsp compare` before and after this function existed).
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    first = tokenizer("a")["input_ids"][:1]
    return [int(bos)] if first == [bos] else []


def window_key(tokenizer: Any) -> dict[str, str]:
    """What a cached result's key adds for BOS-prefixed windows ({} otherwise: older keys stay valid)."""
    return {"windows": "bos"} if bos_prefix(tokenizer) else {}


def calibration_batches(tokenizer: Any, n_samples: int, seq_len: int, source: str = "wiki",
                        seed: int = 0) -> torch.LongTensor:
    """``n_samples`` random windows of ``seq_len`` tokens from a calibration text, shape [n, seq_len].

    The whole text is tokenized once (no special tokens) and windows start at uniformly drawn offsets, as in
    SparseGPT/ShortGPT-style calibration; a ``torch.Generator`` seeded with ``seed`` makes the batches reproducible.
    Each window starts with ``bos_prefix(tokenizer)``. ``source``: ``CALIB`` names (disjoint from the test splits),
    ``"wikitext2-train"``, or a text file path.
    """
    if int(n_samples) < 1 or int(seq_len) < 1:
        raise DataError(f"n_samples and seq_len must be at least 1 (got n_samples={n_samples}, seq_len={seq_len})")
    n_samples, seq_len = int(n_samples), int(seq_len)
    if source == "wikitext2":
        warnings.warn("calibrating on the WikiText-2 *test* split; use 'wikitext2-train' to avoid test leakage",
                      stacklevel=2)
    ids = _tokens(tokenizer, source, CALIB)
    prefix = bos_prefix(tokenizer)
    body = seq_len - len(prefix)
    if body < 1:
        raise DataError(f"seq_len={seq_len} leaves no room for text after the BOS token")
    if ids.numel() < body + 1:
        raise DataError(f"calibration text {source!r} has only {ids.numel()} tokens with this tokenizer; "
                        f"seq_len={seq_len} needs at least {body + 1}")
    starts = window_starts(ids.numel(), body, n_samples, seed, _excluded_spans(tokenizer, source))
    windows = ids[starts[:, None] + torch.arange(body)]
    return torch.cat([torch.tensor(prefix, dtype=windows.dtype).expand(n_samples, -1), windows], dim=1)


def _excluded_spans(tokenizer: Any, source: str) -> list[tuple[int, int]]:
    """Token spans [a, b) of the calibration stream that hold validation documents (CALIB_EXCLUDE)."""
    if source not in CALIB_EXCLUDE or not (data_dir() / CALIB_EXCLUDE[source]).is_file():
        return []
    key = ("exclude", _tokenizer_key(tokenizer), source, _file_identity(data_dir() / CALIB[source]))
    if key not in _TOKEN_CACHE:
        text = _read(data_dir() / CALIB[source], builtin=True)
        val = _read(data_dir() / CALIB_EXCLUDE[source], builtin=True)
        docs = re.split(r"\n\n(?= = [^=].* = \n)", val.rstrip("\n"))  # one piece per article
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                            verbose=False)["offset_mapping"]
        ends = torch.tensor([b for _, b in offsets])
        spans = []
        for doc in docs:
            c0 = text.find(doc)
            if c0 < 0:
                raise DataError(f"validation document {doc[:40]!r} is not in {CALIB[source]}; "
                                f"rebuild with `{PREPARE_HINT}`")
            spans.append((int(torch.searchsorted(ends, c0, right=True)),
                          int(torch.searchsorted(ends, c0 + len(doc))) + 1))
        _TOKEN_CACHE[key] = torch.tensor(spans, dtype=torch.long).reshape(-1, 2)
    return [tuple(s) for s in _TOKEN_CACHE[key].tolist()]


def window_starts(n_ids: int, body: int, n_samples: int, seed: int, spans: list[tuple[int, int]]) -> torch.Tensor:
    """Seeded uniform window starts; any window that would overlap a validation span is redrawn."""
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, n_ids - body, (n_samples,), generator=gen)
    _redraw_overlaps(starts, body, spans, n_ids, gen)
    return starts


def _redraw_overlaps(starts: torch.Tensor, body: int, spans: list[tuple[int, int]], n_ids: int,
                     gen: torch.Generator) -> None:
    """Redraw, in place, each window that would overlap a validation span (seed 0 never needs to:
    its windows, which every committed result used, are the ones the validation split was chosen around)."""
    def overlaps(s: int) -> bool:
        return any(s < b and a < s + body for a, b in spans)

    for i in range(starts.numel()):
        tries = 0
        while spans and overlaps(int(starts[i])):
            tries += 1
            if tries > 1000:
                raise DataError("calibration text has no room for windows outside its validation documents; "
                                "use a shorter seq_len")
            starts[i] = torch.randint(0, n_ids - body, (1,), generator=gen)


def eval_tokens(tokenizer: Any, name_or_path: str, max_tokens: int | None = None) -> torch.LongTensor:
    """The 1-D token ids of an evaluation text (see ``load_text``), cut to ``max_tokens`` if given.

    No special tokens are added; documents are separated by blank lines as in WikiText, so the
    stream matches the usual ``tokenizer("\\n\\n".join(rows))`` perplexity protocol.
    """
    if max_tokens is not None and int(max_tokens) < 1:
        raise DataError(f"max_tokens must be at least 1 or None (got {max_tokens})")
    ids = _tokens(tokenizer, name_or_path, TEXTS)
    if max_tokens is not None:
        ids = ids[: int(max_tokens)]
    return ids.clone()  # callers may modify it; the cache must stay intact
