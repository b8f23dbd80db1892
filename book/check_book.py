#!/usr/bin/env python3
"""Browser check of the built book: every page reads as a published page, not as a notebook log.

    python book/check_book.py [--html book/_build/html] [--chromium /usr/bin/chromium]

Playwright drives the system Chromium (`apt-get install -y chromium`; nothing is downloaded at run
time) over the book served from 127.0.0.1. A page fails on: a load error or broken image; library
log lines, progress bars, tracebacks, warnings, stderr or raw object reprs in a cell output; a table
or code block wider than the text column; an image outside a captioned figure or rendered narrower
than the column. One line per problem (`page: problem`); a full-page screenshot of every page goes to
book/_build/screenshots/ for review. Exit 0: all pass; 1: problems; 2: no book or no Chromium.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import sys
import threading
from pathlib import Path

SKIP_DIRS = {"_static", "_sources", "_images", "_downloads", "_modules", "_sphinx_design_static", ".doctrees",
             "jupyter_execute"}
SKIP_FILES = {"genindex.html", "search.html", "py-modindex.html", "modindex.html"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 1000}
#: An image may be this much narrower than the text column (rounding, figure borders).
WIDTH_TOLERANCE = 0.95
#: (what, pattern) for the text of cell outputs, case-sensitive, per line.
TEXT_PROBLEMS = [
    ("log line", re.compile(r"^\[[A-Za-z][\w.+:/-]*\] |^(loading|computing|converting) .*\.\.\.|^laco: ")),
    ("progress bar", re.compile(r"\d+%\|.*\||█")),
    ("traceback", re.compile(r"Traceback \(most recent call last\)|^\w+(Error|Exception): ")),
    ("warning", re.compile(r"\b\w*Warning: |^WARNING\b|^[Ww]arning: ")),
    ("raw object repr", re.compile(r"<[\w.]+ (object )?at 0x[0-9a-fA-F]+>|<Figure size [\d.]+x[\d.]+ with|^<\w*Axes\w*:"
                                   r"|^\[?<matplotlib\.|^Text\(-?[\d.]+, -?[\d.]+, ")),
    ("truncated table", re.compile(r"^\d+ rows × \d+ columns$")),
]

#: MyST that reached the page as text (a fence or role the parser did not take), outside <code>.
MARKUP = re.compile(r"```|:::\{|\{(doc|ref|numref|cite|eq|glue|math)(:\w+)?\}`")

PROBE_JS = """async () => {
  const root = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const cs = getComputedStyle(root);
  const column = root.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const shown = el => el.getClientRects().length > 0;
  const name = el => (el.innerText || el.getAttribute('src') || '').trim().split('\\n')[0].slice(0, 50);
  const prose = el => [...el.childNodes].map(n => n.nodeType === 3 ? n.textContent : n.nodeName === 'CODE' ? '' : prose(n)).join('');
  const imgs = [...root.querySelectorAll('img')];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; setTimeout(r, 15000); })));
  return {
    column,
    prose: [...root.querySelectorAll('p, li, h1, h2, h3')].map(prose),
    outputs: [...root.querySelectorAll('.cell_output .output')].map(o => ({cls: o.className, text: o.innerText})),
    wide: [...root.querySelectorAll('table, pre')].filter(shown).map(el => ({
      what: el.tagName === 'PRE' ? 'code block' : 'table', name: name(el),
      width: el.getBoundingClientRect().width + Math.max(0, el.scrollWidth - el.clientWidth)})),
    images: imgs.map(i => ({src: i.getAttribute('src') || '', ok: i.complete && i.naturalWidth > 0,
      width: i.getBoundingClientRect().width, shown: shown(i),
      caption: i.closest('figure')?.querySelector('figcaption')?.innerText || ''})),
  };
}"""  # noqa: E501 (the probe is JavaScript, kept as written)


def discover_pages(html: Path) -> list[str]:
    """The book's content pages under html, relative, sorted (index first); no Sphinx utility pages."""
    pages = [p.relative_to(html).as_posix() for p in html.rglob("*.html")
             if not any(d in SKIP_DIRS or d.startswith(".") for d in p.relative_to(html).parts[:-1])
             and p.name not in SKIP_FILES]
    return sorted(pages, key=lambda p: (p != "index.html", p))


def redirect_target(path: Path) -> str | None:
    """The target of a meta-refresh stub (Jupyter Book's index.html), else None."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if len(text) > 4096 or re.search(r"<body\b", text, re.IGNORECASE):
        return None
    m = re.search(r"""http-equiv=["']?refresh["']?\s+content=["']\d+;\s*url=([^"'>\s]+)""", text, re.IGNORECASE)
    return m.group(1) if m else None


def text_problems(outputs: list[dict]) -> list[str]:
    """Problems in the text of cell outputs ({cls, text} as the probe returns them): one per output and kind."""
    problems = []
    for out in outputs:
        cls, lines = out["cls"].split(), out["text"].splitlines()
        if "stderr" in cls:
            problems.append(f"stderr output: {out['text'].strip()[:100]!r}")
            continue
        if "traceback" in cls:
            problems.append(f"traceback: {lines[0][:100] if lines else ''!r}")
            continue
        for what, pattern in TEXT_PROBLEMS:
            hit = next((line.strip() for line in lines if pattern.search(line.strip())), None)
            if hit is not None:
                problems.append(f"{what}: {hit[:100]!r}")
    return problems


def layout_problems(probe: dict) -> list[str]:
    """Unrendered MyST; tables and code wider than the text column; images broken, uncaptioned or narrow."""
    column = probe["column"]
    problems = [f"unrendered markup: {t.strip()[:80]!r}" for t in probe["prose"] if MARKUP.search(t)]
    problems += [f"{w['what']} wider than the column ({w['width']:.0f} > {column:.0f} px): {w['name']!r}"
                for w in probe["wide"] if w["width"] > column + 1]
    for img in probe["images"]:
        if not img["ok"]:
            problems.append(f"image does not render: {img['src']}")
            continue
        if not img["caption"].strip():
            problems.append(f"figure without a caption: {img['src']}")
        if img["shown"] and img["width"] < WIDTH_TOLERANCE * column:  # a collapsed output is not measured
            problems.append(f"image narrower than the column ({img['width']:.0f} < {column:.0f} px): {img['src']}")
    return problems


def check_page(page, url: str, shot: Path) -> list[str]:
    """Load one page, save its screenshot, return its problems."""
    response = page.goto(url, wait_until="networkidle")  # fonts and MathJax settle before the screenshot
    if response is None or not response.ok:
        return [f"HTTP status {response.status if response else '?'}"]
    probe = page.evaluate(PROBE_JS)
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    return text_problems(probe["outputs"]) + layout_problems(probe)


def run_check(html: Path, chromium: str, shots: Path, out=None) -> int:
    """Check every page of the built book at html; print one line per problem; 0 if none, 1 if any, 2 no book."""
    out = out or sys.stdout
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("check-book: the playwright package is missing; install the pins: make setup", file=sys.stderr)
        return 2
    html = html.resolve()
    if not (html / "index.html").is_file():
        print(f"check-book: no built book at {html}; build it first (make book-tiny or make book)", file=sys.stderr)
        return 2
    handler = functools.partial(type("Quiet", (http.server.SimpleHTTPRequestHandler,),
                                     {"log_message": lambda *a: None}), directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    problems: list[str] = []
    pages = discover_pages(html)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for rel in pages:
                target = redirect_target(html / rel)
                if target is not None:
                    if not (html / rel).parent.joinpath(target.split("#")[0]).is_file():
                        problems.append(f"{rel}: redirects to {target}, which does not exist")
                    continue
                page = browser.new_page(viewport=VIEWPORT)
                try:
                    found = check_page(page, base + rel, shots / rel.replace(".html", ".png"))
                except Exception as exc:  # a page that cannot load or be inspected is a problem, not a crash
                    found = [f"could not check the page: {str(exc).splitlines()[0]}"]
                page.close()
                problems += [f"{rel}: {p}" for p in found]
            browser.close()
    finally:
        server.shutdown()
    for line in problems:
        print(line, file=out)
    verdict = f"FAILED: {len(problems)} problem(s)" if problems else "OK"
    print(f"check-book: {verdict} on {len(pages)} page(s); screenshots in {shots}", file=out)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, default=here / "_build" / "html", help="the built book (book/_build/html)")
    ap.add_argument("--chromium", default=None, help="Chromium binary (default: chromium on PATH)")
    ap.add_argument("--screenshots", type=Path, default=None, help="where to save them (default: HTML/../screenshots)")
    args = ap.parse_args(argv)
    chromium = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium or not shutil.which(chromium):
        print("check-book: Chromium not found; install it with:  apt-get install -y chromium", file=sys.stderr)
        return 2
    return run_check(args.html, shutil.which(chromium), args.screenshots or args.html.resolve().parent / "screenshots")


if __name__ == "__main__":
    sys.exit(main())
