"""Tests of book/check_book.py on small synthetic pages: each problem is found, a clean page passes."""
import importlib.util
import shutil
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "book" / "check_book.py"
spec = importlib.util.spec_from_file_location("check_book", SCRIPT)
cb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cb)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None or importlib.util.find_spec("playwright") is None,
                                   reason="needs chromium (apt-get install -y chromium) and playwright "
                                   "(requirements.txt)")


def _out(text: str, cls: str = "output stream highlight-myst-ansi") -> dict:
    return {"cls": cls, "text": text}


@pytest.mark.parametrize("text, kind", [
    ("[trsp-0.25] cached: rows/trsp-0.25-ab12.json", "log line"),
    ("[speed-0.25] dense vs 2 layers removed, interleaved ...", "log line"),
    ("loading smollm2-135m ...", "log line"),
    ("laco: 3 of 8 layers merged after a full walk; lowering the threshold to 0.85", "log line"),
    ("stage 1: select 8 layers:  40%|████      | 13/32 [00:41<01:00,  3.2s/step]", "progress bar"),
    ("Traceback (most recent call last):\n  File \"x.py\", line 1", "traceback"),
    ("ValueError: unknown method 'x'", "traceback"),
    ("/x/y.py:3: FutureWarning: the default will change", "warning"),
    ("<trsp_lib.method.trsp.PruneResult object at 0x7f3a2c1d9e50>", "raw object repr"),
    ("<Figure size 800x420 with 1 Axes>", "raw object repr"),
    ("<Axes: xlabel='step', ylabel='gate'>", "raw object repr"),
    ("[<matplotlib.lines.Line2D at 0x7f00aa>]", "raw object repr"),
    ("5 rows × 30 columns", "truncated table"),
])
def test_each_text_problem_is_found(text, kind):
    (problem,) = cb.text_problems([_out("a clean line\n" + text)])
    assert problem.startswith(kind + ":"), problem


def test_stderr_and_traceback_outputs_fail_whatever_they_say():
    assert cb.text_problems([_out("hello", "output stderr")])[0].startswith("stderr output")
    assert cb.text_problems([_out("boom", "output traceback")])[0].startswith("traceback")


def test_clean_outputs_pass():
    clean = ["TRSP removed layers [7, 13, 14] of 30", "perplexity 91.33 (dense 26.75)", "[0.25, 0.5] ratios",
             "no warnings were raised", "   method  PPL wiki\n0  trsp  91.33"]
    assert cb.text_problems([_out(t) for t in clean]) == []


def test_discover_pages_and_redirect(tmp_path):
    for rel in ["index.html", "intro.html", "executed/02_trsp.html", "genindex.html", "search.html",
                "_static/x.html", "_sources/y.html", "research.html"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("<html><body></body></html>")
    assert cb.discover_pages(tmp_path) == ["index.html", "executed/02_trsp.html", "intro.html", "research.html"]
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=intro.html" />')
    assert cb.redirect_target(tmp_path / "index.html") == "intro.html"
    assert cb.redirect_target(tmp_path / "intro.html") is None


# --------------------------------------------------------------------------- in the browser

SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="900" height="300"><rect width="900" height="300"/></svg>'
FIGURE = '<figure><img src="plot.svg" style="width: 100%"><figcaption><p>{caption}</p></figcaption></figure>'
OUTPUT = '<div class="cell_output docutils container"><div class="output {cls}"><pre>{text}</pre></div></div>'
PAGES = {  # page -> (body inside the text column, the problem it must report; None: it must pass)
    "clean.html": (FIGURE.format(caption="A caption.") + "<table><tr><td>1</td><td>2</td></tr></table>"
                   + "<pre>short code</pre><p>MyST roles look like <code>{doc}`page`</code>.</p>"
                   + OUTPUT.format(cls="stream", text="perplexity 91.33"), None),
    "log.html": (OUTPUT.format(cls="stream", text="[trsp-0.25] cached: rows/a.json"), "log line"),
    "stderr.html": (OUTPUT.format(cls="stderr", text="UserWarning: x"), "stderr output"),
    "repr.html": (OUTPUT.format(cls="text_plain", text="&lt;Figure size 640x480 with 1 Axes&gt;"), "raw object repr"),
    "wide_table.html": ('<div style="overflow-x: auto"><table><tr>' + "<td>column_name_long</td>" * 60
                        + "</tr></table></div>", "table wider than the column"),
    "wide_code.html": ("<pre style='overflow-x: auto'>" + "x = 1; " * 200 + "</pre>",
                       "code block wider than the column"),
    "markup.html": ("<p>```{admonition} How lin works :class: note</p>", "unrendered markup"),
    "no_caption.html": ('<img src="plot.svg" style="width: 100%">', "figure without a caption"),
    "narrow.html": (FIGURE.format(caption="Small.").replace("width: 100%", "width: 40%"),
                    "image narrower than the column"),
    "broken.html": (FIGURE.format(caption="Gone.").replace("plot.svg", "missing.png"), "image does not render"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    html = tmp_path_factory.mktemp("site") / "html"
    html.mkdir()
    (html / "plot.svg").write_text(SVG)
    (html / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=clean.html" />')
    for name, (body, _) in PAGES.items():
        (html / name).write_text(f"<!doctype html><html><head><title>{name}</title>"
                                 "<style>figure { margin: 0 }</style></head><body>"
                                 f'<article class="bd-article" style="width: 700px">{body}</article></body></html>')
    return html


@needs_browser
def test_browser_check_finds_each_problem_and_passes_the_clean_page(site, capsys):
    shots = site.parent / "screenshots"
    assert cb.run_check(site, CHROMIUM, shots) == 1
    lines = capsys.readouterr().out.splitlines()
    for name, (_, problem) in PAGES.items():
        found = [line for line in lines if line.startswith(name + ":")]
        if problem is None:
            assert found == [], found
        else:
            assert any(line.startswith(f"{name}: {problem}") for line in found), (name, lines)
    assert sorted(p.name for p in shots.iterdir()) == sorted(n.replace(".html", ".png") for n in PAGES)


@needs_browser
def test_browser_check_passes_a_clean_book_and_names_a_missing_one(site, tmp_path, capsys):
    html = tmp_path / "html"
    html.mkdir()
    for name in ("index.html", "clean.html", "plot.svg"):
        shutil.copy(site / name, html / name)
    assert cb.run_check(html, CHROMIUM, tmp_path / "shots") == 0
    assert "check-book: OK on 2 page(s)" in capsys.readouterr().out
    assert cb.run_check(tmp_path / "nothing", CHROMIUM, tmp_path / "shots") == 2
    assert "build it first" in capsys.readouterr().err


def test_missing_chromium_names_the_fix(tmp_path, capsys):
    assert cb.main(["--html", str(tmp_path), "--chromium", str(tmp_path / "no-chromium")]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err
