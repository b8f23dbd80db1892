"""The architecture the README promises: a library that stands without the study's book code."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = sorted((ROOT / "trsp_lib").rglob("*.py"))
OURS = LIBRARY + sorted((ROOT / "study").rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) of every import in `path`, relative ones made absolute."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.append((module, [a.name for a in node.names]))
    return out


def test_the_library_never_imports_the_study_or_ipython():
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in LIBRARY for m, _ in _imports(p)
           if m.split(".")[0] in ("study", "IPython")]
    assert not bad, f"trsp_lib must stand alone: {bad}"


def test_no_module_takes_another_modules_private_names():
    bad = [f"{p.relative_to(ROOT)}: from {m} import {n}" for p in OURS for m, names in _imports(p)
           for n in names if n.startswith("_") and not n.startswith("__")]
    assert not bad, f"make these public or keep them in their module: {bad}"


def test_every_library_module_imports_with_the_study_absent():
    """A user who installs only the library: importing `study` fails, and every trsp_lib module still imports."""
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in LIBRARY]
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'study': raise ImportError('study is not installed')\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {modules!r}: __import__(m)\n"
            "print('ok', len(sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests")
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stderr[-2000:]


def test_the_readme_is_usage_a_newcomer_reads_in_five_minutes():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for promise in ("make test", "make book", "trsp prune", "trsp eval", "trsp speed", "trsp compare", "papermill",
                    "lm_eval", "Where things live", "Add a criterion"):
        assert promise in text, f"the README no longer shows {promise!r}"
