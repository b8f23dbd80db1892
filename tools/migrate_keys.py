"""Rewrite stored results to the current cache-key schema (`trsp_lib.provenance.KEY_SCHEMA`).

    .venv/bin/python tools/migrate_keys.py [FOLDER ...]     # default: data/results

Schema 1 (no "schema" entry) left things out of a key while they held their default: the `TRSPConfig` fields
added late (stage2_loss, kd_temperature, heal_last), a float32 dtype, the default evaluation texts, windows
without BOS, a pipeline's empty edits or key-less healing, the validation texts (never keyed), the CPU device
of a speed row; speed rows stored no parameters. Schema 2 records all of them. Each record's parameters are
recomputed in full from what it stores, filling each absent entry with what the old key meant; its key is
recomputed and the record written atomically under its new file name, then the old file removed. A record
already at schema 2 is left alone (a second run changes nothing). compare's derived summaries
(results.json, results.csv beside rows/) get the new keys. A record that cannot be mapped stops the run
before anything is written, with one line naming the fix.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trsp_lib.compare import DEFAULT_TEXTS, DEFAULT_VAL_TEXTS  # noqa: E402
from trsp_lib.method.config import TRSPConfig, config_key  # noqa: E402
from trsp_lib.pipelines import parse  # noqa: E402
from trsp_lib.provenance import KEY_SCHEMA, atomic_path, digest, param_key, write_json_atomic  # noqa: E402
from trsp_lib.results import cached_params  # noqa: E402

#: What schema 1 left out of a key's config while it held its default (the fields added to `TRSPConfig` late).
SCHEMA1_LATER = ("stage2_loss", "kd_temperature", "heal_last")
#: The entries of a row's params that are its own, not shared by the rows of one `compare` call.
OWN = ("method", "ratio", "n", "config", "criterion_samples", "ft_steps", "edits", "heal", "val_texts")


class Unmappable(Exception):
    """A record this tool cannot rewrite; the message names the fix."""


def shared_v2(old: dict) -> dict:
    """The shared entries in full: absent from a schema-1 key meant float32, the default texts, no BOS."""
    return {"schema": KEY_SCHEMA, **old, "dtype": old.get("dtype", "float32"),
            "texts": old.get("texts", dict(DEFAULT_TEXTS)), "windows": old.get("windows", "plain")}


def config_v2(old: dict) -> dict:
    """Every `TRSPConfig` field; a late field absent from a schema-1 key held its default."""
    names = {f.name for f in dataclasses.fields(TRSPConfig)}
    missing, unknown = sorted(names - set(old) - set(SCHEMA1_LATER)), sorted(set(old) - names)
    if missing or unknown:
        raise Unmappable(f"its config lacks {missing} / has unknown {unknown}; delete it (it is recomputed)")
    return config_key(TRSPConfig(**old))


def row_v2(old: dict, scored_validation: bool) -> dict:
    """A compare row's params in full (schema 1 -> 2), checked against what `Pipeline.key_params` now records."""
    new = shared_v2(old)
    if old["method"] == "dense":
        return new
    try:
        p = parse(old["method"])
    except ValueError as e:
        raise Unmappable(f"{e}; delete it or restore the step") from None
    new["config"] = config_v2(old["config"])
    new.setdefault("edits", {})
    new.setdefault("heal", {} if p.heal else None)
    if scored_validation:
        new.setdefault("val_texts", dict(DEFAULT_VAL_TEXTS))
    expect = p.key_params(new["ratio"], new["n"], TRSPConfig(**new["config"]), new["criterion_samples"],
                          new["ft_steps"], {"lin": new["edits"].get("lin", {})})
    if any(new[k] != v for k, v in expect.items()):
        raise Unmappable(f"its params disagree with what {old['method']!r} keys; delete it (it is recomputed)")
    return new


def speed_v2(record: dict, path: Path, siblings: list[dict]) -> dict:
    """A speed row's params: schema 1 stored none, so find the shared params of a row beside it (and n at its
    ratio) that its key hashes, with the device it recorded only when not the CPU (a row's config names the CPU
    for float32 arithmetic on a GPU, so the usual GPU names are tried too)."""
    ratio = float(path.stem.split("-")[1])
    for old in siblings:
        if "calib" not in old or old.get("ratio") != ratio:
            continue
        shared = {k: v for k, v in old.items() if k not in OWN}
        devices = dict.fromkeys([old["config"]["device"], "cuda", "auto"])
        for machine in ({}, *({"device": d} for d in devices if d != "cpu")):
            if digest({**shared, "speed": ratio, "n": old["n"], **machine}) == record["key"]:
                return {**shared_v2(shared), "speed": ratio, "n": old["n"], "device": machine.get("device", "cpu")}
    raise Unmappable("no row beside it has the parameters its key hashes; delete it (it is remeasured)")


def plain_copy(record: dict) -> list[dict]:
    """Schema 1 keyed a pipeline's row alike whether `compare` ran it as a plain row or a `pipelines` row (which
    scores validation); schema 2 keys them apart, so a row that scored validation and whose label a plain call
    also makes (a selection alone, or + ft) served both: it is written under the plain key too ("copy_of")."""
    if "val_texts" not in record["params"]:
        return []
    p = parse(record["method"])
    if p.edits or p.select.family or (p.heal and p.heal.name != "ft"):
        return []
    params = {k: v for k, v in record["params"].items() if k != "val_texts"}
    return [{**record, "params": params, "key": param_key(params), "copy_of": record["key"]}]


def migrated(path: Path, record: dict, siblings: list[dict]) -> tuple[str, list[dict]] | None:
    """(kind, the record at schema 2 and any plain copy), or None when it already is at schema 2; `siblings`: the
    old params of the rows beside it."""
    if record.get("schema") == KEY_SCHEMA or (record.get("params") or {}).get("schema") == KEY_SCHEMA:
        hashed = cached_params(record["kind"], record["params"], record["version"]) if "kind" in record \
            else record["params"]
        if param_key(hashed) != record["key"]:
            raise Unmappable("its key is not the hash of its params; delete it (it is recomputed)")
        return None
    if "kind" in record and "result" in record:  # a `results.cached` result: the version is its provenance's
        version = record["provenance"]["trsp_lib"]
        if digest({"kind": record["kind"], "params": record["params"], "version": version}) != record["key"]:
            raise Unmappable("its key is not the schema-1 hash of its params; delete it (it is recomputed)")
        hashed = cached_params(record["kind"], record["params"], version)
        return "cached", [{**hashed, **record, **hashed, "key": param_key(hashed)}]
    if path.name.startswith("speed-") and "speedup" in record and "params" not in record:
        params = speed_v2(record, path, siblings)
        return "speed", [{**record, "params": params, "key": param_key(params)}]
    if isinstance(record.get("params"), dict) and "method" in record["params"]:
        if digest(record["params"]) != record["key"]:
            raise Unmappable("its key is not the schema-1 hash of its params; delete it (it is recomputed)")
        val = "same_as" not in record and any(f"ppl_{label}" in record for label in DEFAULT_VAL_TEXTS)
        params = row_v2(record["params"], val)
        new = {**record, "params": params, "key": param_key(params)}
        return "row", [new, *plain_copy(new)]
    raise Unmappable("a keyed record of no kind this tool knows (row, speed row, cached result); "
                     "delete it and recompute it")


def new_path(path: Path, old_key: str, new_key: str) -> Path:
    """The file name with the new key in place of the old (`<label>-<key>.json`, `<key>.json`)."""
    stem = path.stem
    if not stem.endswith(old_key):
        raise Unmappable(f"its file name does not end with its key {old_key}; rename it <label>-{old_key}.json")
    return path.with_name(stem[: -len(old_key)] + new_key + ".json")


def plan(folder: Path) -> tuple[dict[Path, list[tuple[Path, dict]]], dict[str, str], dict[str, int]]:
    """Every rewrite under `folder` (old path -> [(new path, record)]), the key map and counts; writes nothing."""
    records: dict[Path, dict] = {}
    for path in sorted(folder.rglob("*.json")):
        if path.name != "results.json":
            record = json.loads(path.read_text())
            if isinstance(record, dict) and "key" in record:
                records[path] = record
    siblings: dict[Path, list[dict]] = {}
    for path, r in records.items():
        if isinstance(r.get("params"), dict) and "method" in r["params"]:
            siblings.setdefault(path.parent, []).append(r["params"])
    moves: dict[Path, list[tuple[Path, dict]]] = {}
    keys: dict[str, str] = {}
    counts = {"row": 0, "speed": 0, "cached": 0, "copy": 0, "current": 0}
    for path, record in records.items():
        try:
            done = migrated(path, record, siblings.get(path.parent, []))
            writes = [(new_path(path, record["key"], r["key"]), r) for r in (done[1] if done else [])]
        except (Unmappable, KeyError, TypeError, ValueError) as e:
            raise SystemExit(f"migrate_keys: {path}: {e}") from None
        if done is None:
            counts["current"] += 1
            continue
        taken = {t for w in moves.values() for t, _ in w}
        for target, _ in writes:
            if target in taken or (target.exists() and target not in records):
                raise SystemExit(f"migrate_keys: {path}: another record maps to {target.name} too; delete one of them")
        counts[done[0]] += 1
        counts["copy"] += len(writes) - 1
        moves[path] = writes
        keys[record["key"]] = writes[0][1]["key"]
    return moves, keys, counts


def summaries(folder: Path, keys: dict[str, str], current: set[str]) -> dict[Path, str]:
    """compare's results.json / results.csv beside rows/ with the new keys (path -> new text); one whose row
    matches no record is refused."""
    out: dict[Path, str] = {}
    for summary in sorted(folder.rglob("results.json")):
        data = json.loads(summary.read_text())
        for row in data.get("rows", []):
            if row.get("key") not in keys and row.get("key") not in current:
                raise SystemExit(f"migrate_keys: {summary}: its row {row.get('method')} ({row.get('key')}) matches "
                                 "no record beside it; delete results.json and results.csv (rerun `trsp compare`)")
        text = summary.read_text()
        csv = summary.with_name("results.csv")
        for path, body in ((summary, text), (csv, csv.read_text() if csv.exists() else None)):
            if body is not None:
                for old, new in keys.items():
                    body = body.replace(old, new)
                if body != path.read_text():
                    out[path] = body
    return out


def migrate(folder: Path) -> str:
    """Rewrite every record under `folder` to schema 2; returns the line the command prints."""
    if not folder.is_dir():
        raise SystemExit(f"migrate_keys: {folder} is not a folder; give a results folder, e.g. data/results")
    moves, keys, counts = plan(folder)
    current = {r.get("key") for r in (json.loads(p.read_text()) for p in folder.rglob("*.json")
                                      if p.name != "results.json") if isinstance(r, dict)}
    texts = summaries(folder, keys, current)
    for old, writes in moves.items():
        for new, record in writes:
            write_json_atomic(new, record)
        if old not in [new for new, _ in writes]:
            old.unlink()
    for path, body in texts.items():
        with atomic_path(path) as tmp:
            tmp.write_text(body)
    return (f"{folder}: rewrote {counts['row']} rows (+{counts['copy']} plain copies), {counts['speed']} speed rows, "
            f"{counts['cached']} cached results to key schema {KEY_SCHEMA}; {counts['current']} already at it; "
            f"{len(texts)} summaries updated")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", type=Path, default=[ROOT / "data" / "results"], metavar="FOLDER")
    for folder in ap.parse_args(argv).folders:
        print(migrate(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
