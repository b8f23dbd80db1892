"""Size limits of the library and the study's code (trsp_lib/ and study/, every subfolder): no module over
300 lines, no function over 60 (decorators and docstring included), no block of 6 or more lines repeated
(blank and comment lines ignored).

    .venv/bin/python tools/check_sizes.py          # what `make lint` (part of `make test`) runs

Prints every module and function over its limit and exits 1 if there is one; `--report` also lists
the largest of each. ruff checks the rest (pyproject.toml: statements and branches per function).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "trsp_lib", ROOT / "study")
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
REPEAT_LINES = 6
EXEMPT: set[str] = set()  # modules allowed over the limits (none)


def modules(packages: tuple[Path, ...] = PACKAGES) -> list[tuple[str, Path]]:
    """(name relative to the repository, path) of every module in `packages` and their subfolders."""
    found = [p for package in packages for p in sorted(package.rglob("*.py"))]
    return [(str(p.relative_to(ROOT)), p) for p in found if p.name not in EXEMPT]


def sizes(packages: tuple[Path, ...] = PACKAGES) -> tuple[dict[str, int], dict[str, int]]:
    """(lines per module, lines per function as "module:qualified name")."""
    lines, functions = {}, {}
    for name, path in modules(packages):
        text = path.read_text()
        lines[name] = len(text.splitlines())
        for node, qual in _functions(ast.parse(text)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            functions[f"{name}:{qual}"] = node.end_lineno - start + 1
    return lines, functions


def repeated_blocks(packages: tuple[Path, ...] = PACKAGES) -> list[str]:
    """Every window of REPEAT_LINES code lines that occurs more than once, as "file:line, file:line"."""
    seen: dict[tuple, list[str]] = {}
    for name, path in modules(packages):
        code = [(i, line.strip()) for i, line in enumerate(path.read_text().splitlines(), 1)
                if line.strip() and not line.strip().startswith("#")]
        for k in range(len(code) - REPEAT_LINES + 1):
            window = tuple(line for _, line in code[k:k + REPEAT_LINES])
            seen.setdefault(window, []).append(f"{name}:{code[k][0]}")
    return [", ".join(places) for places in seen.values() if len(places) > 1]


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, prefix + node.name
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="also list the five largest modules and functions")
    args = ap.parse_args(argv)
    lines, functions = sizes()
    bad = [f"{m}: {n} lines (limit {MAX_MODULE_LINES})" for m, n in lines.items() if n > MAX_MODULE_LINES]
    bad += [f"{f}: {n} lines (limit {MAX_FUNCTION_LINES})" for f, n in functions.items() if n > MAX_FUNCTION_LINES]
    bad += [f"{REPEAT_LINES} lines repeated at {places}" for places in repeated_blocks()]
    if args.report:
        for title, table in (("modules", lines), ("functions", functions)):
            top = sorted(table.items(), key=lambda kv: -kv[1])[:5]
            print(f"largest {title}: " + ", ".join(f"{k} {v}" for k, v in top))
    for line in bad:
        print(f"too long: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
