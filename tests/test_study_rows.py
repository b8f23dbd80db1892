"""tools/study_rows.py: the batch driver's jobs carry the book's arithmetic, and its archive holds only new rows."""
import argparse
import importlib.util
import os
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def study_rows():
    spec = importlib.util.spec_from_file_location("study_rows", ROOT / "tools" / "study_rows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def driver(mod, tmp_path, **kw):
    a = argparse.Namespace(**{"model": "tiny", "device": "cuda", "workers": 1, "threads": 1, "zs_batch": 64,
                              "pack": str(tmp_path / "rows.tar.gz"), "main_limit": 500, "frontier_limit": 50, **kw})
    return mod.Driver(a)


def test_a_job_is_float32_without_autocast_and_keeps_its_own_overrides(study_rows, tmp_path):
    d = driver(study_rows, tmp_path)
    kind, kw = d.compare_job(methods=["sleb"], overrides={"seed": 2}, limit=500)
    d.pool.shutdown()
    assert kind == "compare"
    assert kw["overrides"] == {"device": "cuda", "autocast": "none", "seed": 2}
    assert (kw["dtype"], kw["zs_batch_size"], kw["ratios"], kw["limit"]) == ("float32", 64, [0.25], 500)
    from trsp_lib.method.config import TRSPConfig, config_key
    assert config_key(TRSPConfig(**kw["overrides"])) == config_key(TRSPConfig(seed=2))  # the CPU book's key


def test_pack_holds_the_files_written_since_the_start_relative_to_the_results(study_rows, tmp_path, monkeypatch):
    results = tmp_path / "results"
    old = results / "compare-x" / "rows" / "old.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    os.utime(old, (time.time() - 60, time.time() - 60))
    monkeypatch.setenv("TRSP_RESULTS", str(results))
    d = driver(study_rows, tmp_path)
    d.pool.shutdown()
    (results / "compare-x" / "rows" / "new.json").write_text("{}")
    d.pack()
    with tarfile.open(tmp_path / "rows.tar.gz") as tar:
        assert tar.getnames() == ["compare-x/rows/new.json"]
