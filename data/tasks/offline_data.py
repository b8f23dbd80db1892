"""The offline tasks' data, found next to this folder whatever the caller's working directory.

Why: `dataset_kwargs.data_files` in data/tasks/*.yaml is relative to data/ (the folder above this
one); `datasets.load_dataset` would read it relative to the process's working directory, so stock
`lm_eval --include_path data/tasks` worked only from data/. The YAMLs name this loader with lm-eval's
`custom_dataset: !function offline_data.load`; it loads the same JSONL in the same order as
`dataset_path: json` does. trsp_lib.zeroshot drops the hook and passes absolute paths itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent


def load(data_files: dict[str, str], **metadata: Any):
    """lm-eval's custom_dataset hook: `data_files` made absolute against data/, then read as JSON lines."""
    import datasets

    files = {split: str(DATA / path) for split, path in data_files.items()}  # an absolute path stays itself
    return datasets.load_dataset("json", data_files=files)
