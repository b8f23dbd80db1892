"""The notebooks' contract with papermill and the book (their execution is `make book-tiny`)."""
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
ALL = CHAPTERS  # the classroom assignments are nbgrader notebooks: tests/test_assignments.py, test_classroom.py


def _parameters(nb) -> str:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged `parameters`"
    return cells[0].source


def test_chapters_numbered_from_the_intro_without_gaps():
    assert [p.stem[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(len(CHAPTERS))]
    assert CHAPTERS[0].stem == "00_intro" and len(CHAPTERS) >= 9


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    params = _parameters(nb)
    names = ("model", "study") if "study =" in params else ("model", "ratio", "seed", "device", "profile")
    for name in names:  # a chapter that reads the plan takes its other parameters in `study` (study/params.py)
        assert any(line.split("=")[0].strip() in (name, name + "s") for line in params.splitlines() if "=" in line), \
            f"{path.name}: parameter {name!r} missing"


def test_notebooks_hold_no_training_loop():
    """The algorithm lives in trsp_lib: no optimizer or backward pass in a chapter."""
    for path in CHAPTERS:
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "optim." not in code and ".step()" not in code, path.name


def test_book_profiles_only_set_parameters_the_notebooks_have():
    params = yaml.safe_load((ROOT / "book" / "params.yaml").read_text())
    cells = {p.stem: _parameters(nbformat.read(p, as_version=4)) for p in ALL}
    for profile, per_nb in params.items():
        for name, values in per_nb.items():
            if name.startswith("_"):
                continue
            assert name in cells, f"{profile}: no notebook {name}"
            declared = {line.split("=")[0].strip() for line in cells[name].splitlines() if "=" in line}
            assert set(values or {}) <= declared, f"{profile}/{name}: unknown {set(values) - declared}"


def test_toc_lists_every_notebook():
    toc = (ROOT / "book" / "_toc.yml").read_text()
    for path in ALL:
        assert f"executed/{path.relative_to(ROOT / 'notebooks').with_suffix('')}" in toc
    for path in sorted((ROOT / "classroom" / "source").glob("*/*.ipynb")):
        assert f"student/{path.stem}" in toc  # the student version, made by nbgrader


def _runner():
    import importlib.util
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "book" / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runner_treats_warnings_on_stderr_as_errors(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something odd\n"),
                           nbformat.v4.new_output("stream", name="stdout", text="a warning in stdout is fine\n")]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    found = _runner().warnings_in(path)
    assert len(found) == 1 and "n.ipynb cell 0: UserWarning" in found[0]


def test_runner_stamp_changes_with_results(tmp_path):
    runner = _runner()
    empty = runner.results_digest(tmp_path)
    (tmp_path / "kind").mkdir()
    (tmp_path / "kind" / "a.json").write_text("{}")
    assert runner.results_digest(tmp_path) != empty


def test_the_literal_ablation_is_the_literal_profile():
    """The ablations chapter's "paper read literally" row must stay what `--profile literal` runs."""
    from study.plan import ABLATIONS
    from trsp_lib.profiles import load

    assert load("default", **ABLATIONS["the paper read literally"]) == load("literal")


def test_runner_collapses_code_unless_tagged_otherwise(tmp_path):
    tags = [["parameters"], ["injected-parameters"], [], ["show-input"], ["remove-input"], ["hide-output"]]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": list(t)}) for t in tags]
                                  + [nbformat.v4.new_markdown_cell("text")])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    _runner().collapse_code(path)
    cells = nbformat.read(path, as_version=4).cells
    assert [c.metadata.get("tags") for c in cells] == [
        ["parameters", "hide-input"], ["injected-parameters", "hide-input"], ["hide-input"], ["show-input"],
        ["remove-input"], ["hide-output", "hide-input"], None]
    prompts = [c.metadata.get("mystnb", {}).get("code_prompt_show") for c in cells]
    assert prompts[:2] == list(_runner().PARAMETERS_PROMPT.values()) and not any(prompts[2:])  # one line each
