"""The set-up promises of the README: pins agree, the layout exists, CI runs make test."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_requirements_and_environment_pin_the_same_versions():
    req = _pins((ROOT / "requirements.txt").read_text().splitlines())
    env = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert req, "requirements.txt holds no pins"
    assert req == env, (f"pins differ: only in requirements {set(req.items()) - set(env.items())}, "
                        f"only in environment.yml {set(env.items()) - set(req.items())}")


def test_every_dependency_is_pinned_exactly():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert "==" in line, f"unpinned requirement: {line}"


def test_layout_and_ci():
    for entry in ["book", "notebooks", "trsp_lib", "data", "tests", "environment.yml", "README.md", "Makefile",
                  "pyproject.toml", ".ci/run"]:
        assert (ROOT / entry).exists(), f"missing top-level entry {entry}"
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text(), "torch must be installed first with its exact pin"
