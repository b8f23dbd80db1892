"""Tests of book/check_book.py: the pure-Python parts always, the real browser check when Chromium is installed."""
import importlib.util
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "book" / "check_book.py"


def _load():
    spec = importlib.util.spec_from_file_location("check_book", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_book"] = mod
    spec.loader.exec_module(mod)
    return mod


cb = _load()


def _touch(root: Path, rel: str, text: str = "<html><title>t</title><body><main></main></body></html>"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------- page discovery

def test_discover_pages_skips_sphinx_utility_pages(tmp_path):
    for rel in [
        "index.html", "intro.html", "chapters/method.html", "notebooks/02_trsp.html",
        "genindex.html", "search.html", "py-modindex.html",
        "_static/webpack-macros.html", "_sources/intro.md.html", "_images/x.html",
        "_modules/trsp_lib/models.html", ".doctrees/x.html", "chapters/_static/y.html",
        "jupyter_execute/nb.html", "notes.txt", "intro.html.bak",
    ]:
        _touch(tmp_path, rel)
    assert cb.discover_pages(tmp_path) == [
        "index.html", "chapters/method.html", "intro.html", "notebooks/02_trsp.html",
    ]


def test_discover_pages_index_first_and_empty(tmp_path):
    assert cb.discover_pages(tmp_path) == []
    _touch(tmp_path, "a.html")
    _touch(tmp_path, "index.html")
    assert cb.discover_pages(tmp_path)[0] == "index.html"


def test_discover_pages_skips_util_names_only_by_exact_name(tmp_path):
    _touch(tmp_path, "research.html")          # not "search.html"
    _touch(tmp_path, "static/page.html")       # "static" is not "_static"
    assert cb.discover_pages(tmp_path) == ["research.html", "static/page.html"]


# --------------------------------------------------------------------------- redirect stubs

def test_redirect_target_of_jupyter_book_index(tmp_path):
    _touch(tmp_path, "index.html", '<meta http-equiv="Refresh" content="0; url=intro.html" />\n')
    _touch(tmp_path, "intro.html")
    _touch(tmp_path, "page.html",
           '<html><head><meta http-equiv="refresh" content="0; url=x.html"></head><body><main/></body></html>')
    assert cb.redirect_target(tmp_path / "index.html") == "intro.html"
    assert cb.redirect_target(tmp_path / "intro.html") is None
    assert cb.redirect_target(tmp_path / "page.html") is None   # a real page with a body is rendered
    assert cb.redirect_problems(tmp_path, "index.html", "intro.html") == []
    assert cb.redirect_problems(tmp_path, "index.html", "intro.html#top") == []
    assert cb.redirect_problems(tmp_path, "index.html", "https://example.org/") == []
    (msg,) = cb.redirect_problems(tmp_path, "index.html", "missing.html")
    assert "missing.html" in msg and "does not exist" in msg


# --------------------------------------------------------------------------- verdicts

def _img(src, complete=True, w=640, h=480):
    return {"src": src, "url": "http://127.0.0.1:1/" + src, "alt": "", "complete": complete,
            "naturalWidth": w, "naturalHeight": h}


def _probe(images=(), title="Page — Book", has_main=True, url="http://127.0.0.1:1/p.html"):
    return {"url": url, "title": title, "hasMain": has_main, "images": list(images), "readyState": "complete"}


def test_image_problems():
    assert cb.image_problems([_img("_images/a.png"), _img("_images/b.svg", w=1, h=1)]) == []
    probs = cb.image_problems(
        [_img("ok.png"), _img("gone.png", w=0, h=0), _img("slow.png", complete=False, w=0, h=0),
         _img("flat.png", w=10, h=0)],
        failed={"http://127.0.0.1:1/gone.png": "HTTP 404"},
    )
    assert len(probs) == 3
    assert "'gone.png'" in probs[0] and "0x0" in probs[0] and "HTTP 404" in probs[0]
    assert "'slow.png'" in probs[1] and "did not finish loading" in probs[1]
    assert "'flat.png'" in probs[2] and "10x0" in probs[2]


def test_page_problems_ok_and_each_failure():
    ok = {"status": 200, "probe": _probe([_img("a.png")])}
    assert cb.page_problems(ok) == []
    assert cb.page_problems({"status": 404, "probe": _probe()}) == ["HTTP status 404"]
    assert cb.page_problems({"status": 200, "probe": _probe(title="")}) == ["page has no <title>"]
    assert cb.page_problems({"status": 200, "probe": _probe(has_main=False)}) == [
        "page has no <main>/<article> element"]
    assert "Chromium error page" in cb.page_problems(
        {"status": None, "probe": _probe(url="chrome-error://chromewebdata/")})
    assert cb.page_problems({"nav_error": "net::ERR_CONNECTION_REFUSED", "probe": None}) == [
        "navigation failed: net::ERR_CONNECTION_REFUSED"]
    assert cb.page_problems({"timeout": "no load event within 30 s", "probe": None}) == [
        "no load event within 30 s"]
    assert cb.page_problems({"probe": None}) == ["page could not be inspected"]


def test_missing_chromium_and_missing_book(tmp_path, capsys):
    assert cb.main(["--html", str(tmp_path), "--chromium", str(tmp_path / "no-such-chromium")]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err
    assert cb.run_check(tmp_path, "/bin/true") == 2          # no index.html: nothing to check
    assert "index.html missing" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real browser check

CHROMIUM = shutil.which("chromium")
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")


def _png(path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 4])
    fig.savefig(path, dpi=60)
    plt.close(fig)


@pytest.fixture(scope="module")
def mini_book(tmp_path_factory):
    """A built mini Jupyter Book: intro, a page with a matplotlib figure, a page with broken images."""
    assert JUPYTER_BOOK.exists(), "jupyter-book is pinned in requirements.txt: run `make setup`"
    src = tmp_path_factory.mktemp("minibook")
    (src / "_config.yml").write_text(
        "title: Mini book\nauthor: test\nexecute:\n  execute_notebooks: 'off'\nonly_build_toc_files: true\n")
    (src / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n- file: good\n- file: bad\n")
    (src / "intro.md").write_text("# Intro\n\nA mini book for the browser check.\n")
    (src / "good.md").write_text("# Good page\n\n```{figure} figs/plot.png\n:name: fig-plot\n\nA figure.\n```\n")
    (src / "bad.md").write_text(
        "# Bad page\n\n![a missing figure](figs/does_not_exist.png)\n\n"
        '<img src="figs/also_missing.png" alt="raw html img">\n')
    (src / "figs").mkdir()
    _png(src / "figs" / "plot.png")
    build = subprocess.run([str(JUPYTER_BOOK), "build", str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return src / "_build" / "html"


def _check(html: Path):
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--html", str(html), "--chromium", CHROMIUM,
                           "--timeout", "60"], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (sudo apt-get install -y chromium)")
def test_browser_check_on_mini_book(mini_book, tmp_path):
    # 1. As built: the bad page fails, naming both of its images; the others pass.
    rc, out, _ = _check(mini_book)
    assert rc == 1, out
    assert "FAIL bad.html" in out
    assert "ok   good.html  images=1" in out
    assert "ok   intro.html" in out
    assert "ok   index.html  redirect -> intro.html" in out
    summary = out.split("check-book: FAILED", 1)[1]
    assert "bad.html: image 'figs/does_not_exist.png'" in summary
    assert "bad.html: image 'figs/also_missing.png'" in summary
    assert "HTTP 404" in summary and "good.html" not in summary

    # 2. Without the broken page the book passes.
    html = tmp_path / "html"
    shutil.copytree(mini_book, html)
    (html / "bad.html").unlink()
    rc, out, seconds = _check(html)
    assert rc == 0, out
    assert "check-book: OK: 3 page(s), 1 image(s) rendered" in out
    assert seconds < 120

    # 3. A figure file that exists but is not an image fails too (zero natural size).
    (html / "_images" / "plot.png").write_bytes(b"not a png")
    rc, out, _ = _check(html)
    assert rc == 1, out
    assert "good.html: image '_images/plot.png' not rendered (natural size 0x0)" in out
