"""Cache keys of schema 2: every parameter in full, and tools/migrate_keys.py, which rewrites schema-1 records.

Schema-1 records are built from what the current code writes for a call, with what the old keys left out left
out: migrated, they must come back under the keys the current code computes for the same call.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from trsp_lib.compare import DEFAULT_TEXTS, compare
from trsp_lib.provenance import digest
from trsp_lib.results import cached

ROOT = Path(__file__).resolve().parent.parent
LATE = {"stage2_loss": "lm", "kd_temperature": 1.0, "heal_last": 0}  # schema 1 left these out at their default


@pytest.fixture
def migrate_keys():
    spec = importlib.util.spec_from_file_location("migrate_keys", ROOT / "tools" / "migrate_keys.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path / "new"))
    for name in ("TRSP_FRESH", "TRSP_CACHED_ONLY", "TRSP_QUIET"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def schema1(record: dict) -> dict:
    """The record as the schema-1 code wrote it for the same call."""
    old = json.loads(json.dumps(record))
    if "kind" in old:  # a `cached` result: its key hashed kind, params and version only
        del old["schema"]
        old["key"] = digest({"kind": old["kind"], "params": old["params"], "version": old.pop("version")})
        return old
    p = old.pop("params")
    del p["schema"]
    assert (p.pop("dtype"), p.pop("texts"), p.pop("windows")) == ("float32", DEFAULT_TEXTS, "plain")
    p.pop("val_texts", None)
    if "config" in p:
        p["config"] = {k: v for k, v in p["config"].items() if LATE.get(k, object()) != v}
        p = {k: v for k, v in p.items() if not (k in ("edits", "heal") and not v)}
    if "speed" in p:  # a speed row stored no params, and keyed the device only off the CPU
        assert p.pop("device") == "cpu"
    else:
        old["params"] = p
    old["key"] = digest(p)
    return old


def test_migration_maps_old_records_to_the_keys_the_code_computes(tiny_model_dir, results, migrate_keys,
                                                                  monkeypatch, capsys):
    new, old = results / "new", results / "old"
    monkeypatch.setattr("trsp_lib.compare.compare_speed", lambda dense, pruned: {  # a speed row, not its minutes
        "speedup": {"prefill": 1.2, "generate": 1.1}, "ideal": {"prefill": 1.3, "generate": 1.2}})
    run = dict(model=str(tiny_model_dir), ratios=[0.34], methods="reverse", profile="tiny", limit=0,
               criterion_samples=4, finetune_baselines=False, pipelines="reverse+ft,reverse+lin+kd")
    rows = compare(**run)
    cached("demo", {"a": 1}, lambda: {"value": 1})
    for path in new.rglob("*.json"):
        record = json.loads(path.read_text())
        before = schema1(record)
        target = old / path.relative_to(new).parent / path.name.replace(record["key"], before["key"])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(before, indent=2))
    capsys.readouterr()
    migrate_keys.main([str(old)])
    # the cached results: "demo" and the selection record of reverse
    assert "rewrote 4 rows (+1 plain copies), 1 speed rows, 2 cached results" in capsys.readouterr().out
    for path in new.rglob("*.json"):  # each record under the file name and key the current code wrote
        got, want = json.loads((old / path.relative_to(new)).read_text()), json.loads(path.read_text())
        assert (got["key"], got.get("params")) == (want["key"], want.get("params")), path.name
    monkeypatch.setenv("TRSP_RESULTS", str(old))
    again = compare(**run, cached_only=True)
    assert [r["key"] for r in again] == [r["key"] for r in rows] and "not computed" not in capsys.readouterr().out
    plain = compare(**{**run, "pipelines": None, "finetune_baselines": True}, cached_only=True)  # reverse+ft's copy
    assert [r["method"] for r in plain] == ["dense", "reverse", "reverse+ft"]
    assert plain[2]["copy_of"] == rows[2]["key"] and "not computed" not in capsys.readouterr().out
    snapshot = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}
    migrate_keys.main([str(old)])  # idempotent
    assert "rewrote 0 rows (+0 plain copies), 0 speed rows, 0 cached results" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == snapshot


def test_migration_refuses_a_record_it_cannot_map_in_one_line(tmp_path, migrate_keys):
    rows = tmp_path / "compare-x" / "rows"
    rows.mkdir(parents=True)
    (rows / "dense-0123456789abcdef.json").write_text(json.dumps({"key": "0123456789abcdef",
                                                                  "params": {"method": "dense", "model": "x"}}))
    with pytest.raises(SystemExit, match=r"^migrate_keys: .*dense-0123456789abcdef.json: its key is not the schema-1 "
                                         r"hash of its params; delete it \(it is recomputed\)$"):
        migrate_keys.main([str(tmp_path)])
    assert (rows / "dense-0123456789abcdef.json").exists()


def keys(monkeypatch, model: Path, **kw) -> dict[str, str]:
    """The key of every row one `compare` call asks for, computing nothing."""
    seen: dict[str, str] = {}

    def ask(path, key, compute, **_):
        seen[Path(path).name.rsplit("-", 1)[0]] = key

    monkeypatch.setattr("trsp_lib.compare.stored", ask)
    compare(model=str(model), ratios=[0.34], methods="reverse", profile="tiny", limit=0, finetune_baselines=False,
            pipelines="reverse+ft", speed=False, **kw)
    return seen


def test_a_key_records_the_validation_and_evaluation_texts(tiny_model_dir, results, monkeypatch):
    base = keys(monkeypatch, tiny_model_dir)
    assert set(base) == {"dense", "reverse-0.34", "reverse+ft-0.34"}
    val = keys(monkeypatch, tiny_model_dir, val_texts={"wiki_val": "news_val"})
    assert val["reverse+ft-0.34"] != base["reverse+ft-0.34"]  # the row that scores validation: another key
    assert val["dense"] == base["dense"] and val["reverse-0.34"] == base["reverse-0.34"]  # the others score none
    assert keys(monkeypatch, tiny_model_dir, val_texts={"wiki_val": "wiki_val", "news_val": "news_val"}) == base
    test = keys(monkeypatch, tiny_model_dir, eval_texts={"wiki": "news", "news": "news"})
    assert all(test[k] != base[k] for k in base)
    with pytest.raises(ValueError, match="also label eval_texts"):
        keys(monkeypatch, tiny_model_dir, val_texts={"wiki": "wiki_val"})


def test_no_key_exception_remains():
    """Schema 2 has no list of fields a key leaves out; what keys record changes with a schema and a migration."""
    name = "LATER_" + "FIELDS"
    files = [p for d in ("trsp_lib", "study", "tools", "tests", "notebooks") for ext in ("py", "ipynb")
             for p in (ROOT / d).rglob(f"*.{ext}")]
    assert [str(p) for p in files if name in p.read_text()] == []
