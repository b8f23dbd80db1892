"""The regeneration's comparison judges by the tolerances stated in advance, and finds every glued value of the
book that a regeneration changed: a verdict word, or a number by more than the tolerance."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fresh_check():
    spec = importlib.util.spec_from_file_location("fresh_check", ROOT / "tools" / "fresh_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _book(folder: Path, values: dict) -> Path:
    """An executed chapter that glues `values` (as myst-nb's glue writes them) and a figure."""
    folder.mkdir()
    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"application/papermill.record/text/plain": repr(v)},
                                           metadata={"scrapbook": {"name": k, "mime_prefix": "x"}})
                    for k, v in values.items()]
    cell.outputs.append(nbformat.v4.new_output("display_data", data={"application/papermill.record/image/png": "AA",
                                                                     "application/papermill.record/text/plain": "<F>"},
                                               metadata={"scrapbook": {"name": "fig", "mime_prefix": "x"}}))
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / "04_baselines.ipynb")
    return folder


def test_a_changed_verdict_and_a_number_beyond_tolerance_are_found(fresh_check, tmp_path):
    old = _book(tmp_path / "old", {"trsp_ppl": 91.3, "sleb_ppl": 76.0, "verdict": "ties", "layers": [3, 4]})
    new = _book(tmp_path / "new", {"trsp_ppl": 91.5, "sleb_ppl": 80.0, "verdict": "wins", "layers": [3, 4]})
    found = fresh_check.glue_changes(old, new)
    assert found["compared"] == 4  # the figure is not a value
    assert [x["name"] for x in found["numbers beyond tolerance"]] == ["sleb_ppl"]  # 0.2% is within, 5% is not
    assert [(x["committed"], x["recomputed"]) for x in found["other values changed"]] == [("ties", "wins")]


def test_a_row_is_within_tolerance_only_with_the_same_layers(fresh_check):
    old = {"removed": [5, 6], "ppl_wiki": 100.0, "zs_avg": 0.5}
    assert fresh_check.compare_row(old, {"removed": [6, 5], "ppl_wiki": 100.9, "zs_avg": 0.509})["within tolerance"]
    moved = fresh_check.compare_row(old, {"removed": [5, 7], "ppl_wiki": 100.0, "zs_avg": 0.5})
    assert not moved["within tolerance"] and moved["layers"] == {"committed": [5, 6], "recomputed": [5, 7]}
    assert not fresh_check.compare_row(old, {"removed": [5, 6], "ppl_wiki": 101.1, "zs_avg": 0.5})["within tolerance"]
    assert not fresh_check.compare_row(old, {"removed": [5, 6], "ppl_wiki": 100.0, "zs_avg": 0.52})["within tolerance"]


def test_adopting_a_row_copies_the_recomputed_record_over_the_committed_one(fresh_check, tmp_path, monkeypatch):
    monkeypatch.setattr(fresh_check, "ROOT", tmp_path)
    rel = Path("compare-m") / "rows" / "trsp-0.25-abcdef0123456789.json"
    for folder, ppl in (("data/results", 91.3), ("data/fresh", 95.0)):
        (tmp_path / folder / rel).parent.mkdir(parents=True)
        (tmp_path / folder / rel).write_text(f'{{"key": "abcdef0123456789", "ppl_wiki": {ppl}}}')
    (tmp_path / "data/fresh/.claims").mkdir()
    (tmp_path / "data/fresh/.claims/abcdef0123456789.json").write_text("123")  # never a record
    dest = fresh_check.adopt(tmp_path / "data/fresh", {"key": "abcdef0123456789", "ppl_wiki": 95.0})
    assert dest == tmp_path / "data/results" / rel and '"ppl_wiki": 95.0' in dest.read_text()


def test_a_regeneration_not_begun_is_all_estimated(fresh_check, tmp_path, monkeypatch):
    from study import plan, runner

    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path))  # read_plan points the library at the folder it reads
    left: dict = {}
    assert fresh_check.read_plan(tmp_path, left) == {}
    idents = {(r.label, r.model, r.seed, r.limit, r.ratio, r.kind): c for c in plan.CHAPTERS
              for r in runner.resolved(plan.Params(), c)[0]}
    assert set(left) == set(idents) and all(seconds > 0 for seconds, _ in left.values())
    assert {c for _, names in left.values() for c in names} == set(plan.CHAPTERS)


def test_the_hours_are_counted_once_and_by_kind_of_work(fresh_check, tmp_path):
    from study.regeneration import work_table

    for rel, record in {"c/rows/a.json": {"method": "sleb+ft", "cpu_s": 800.0, "nested_cpu_s": 200.0},
                        "c/selection/s.json": {"cpu_s": 200.0}, "c/stage1/t.json": {"cpu_s": 100.0},
                        "c/rows/b.json": {"method": "trsp", "cpu_s": 400.0, "nested_cpu_s": 100.0}}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(__import__("json").dumps(record))
    work = fresh_check.seconds_by_work(tmp_path)
    assert work == {"sleb+ft": 300.0, "trsp": 150.0, "selections": 100.0, "TRSP stage 1": 50.0}  # half the CPU s
    t = work_table({"summary": {"hours by kind of work": {k: v / 3600 for k, v in work.items()}}})
    assert list(t.index) == ["fine-tuned rows (+ft)", "TRSP rows (stage 2, evaluation)",
                             "selections (SLEB, LaCo, the criteria)", "TRSP's stage 1"]
    assert abs(t["share"].sum() - 1) < 1e-9
