#!/usr/bin/env python3
# Needs the system Chromium, installed with:  apt-get install -y chromium   (as root; else sudo)
# (tested: Debian 12 package chromium 156.0.8078.108; ~113 MB download, ~480 MB on disk, ~1 min)
"""Browser check of the built Jupyter Book: every page loads, every figure image renders.

Needs the system Chromium (Debian 12 package, nothing is downloaded at run time):

    sudo apt-get install -y chromium        # tested with Chromium 156.0.8078.108 (Debian bookworm)

Usage:

    python book/check_book.py [--html book/_build/html] [--chromium /usr/bin/chromium] [--timeout 30]

How it works (standard library only):

* Finds every ``*.html`` page under the built book, skipping Sphinx utility pages and asset
  folders (genindex, search, py-modindex, _static, _sources, _images, _modules, ...).
* Serves the book from a throwaway ``http.server`` on 127.0.0.1 (random port) that this script
  starts and stops itself. HTTP rather than file:// because that is how the book is published:
  a missing page or image shows up as a real 404, relative/absolute URLs, MIME types and the
  theme's JavaScript behave as on a web host, and Chromium's file:// origin rules play no part.
* Starts headless Chromium with ``--remote-debugging-pipe`` and speaks the DevTools protocol
  (NUL-separated JSON on file descriptors 3/4) directly: no websocket client, no Playwright.
* For each page: navigates, waits for the load event (time limit per page), then in the page
  switches lazy images to eager, waits for them to settle and reads, for every <img> in the main
  content (``article.bd-article`` of the book theme, else <main>/<article>/<body>),
  ``complete``, ``naturalWidth`` and ``naturalHeight``.
* A page that times out or crashes the renderer gets the browser restarted for the next page.
* Jupyter Book's index.html is a meta-refresh stub: it is checked on disk (its target exists),
  not rendered; the target page itself is checked like any other.
* Failed sub-resource requests and JavaScript errors are printed as warnings (``--strict`` fails
  on them); Jupyter Book 1.0.4 itself throws one harmless JS error on every page (THEBE_JS_URL).
* A page fails if navigation fails, the document status is not 2xx, it lands on a Chromium
  error page, it has no <title> text or no <main>/<article> element, or any image in the main
  content is incomplete or has zero natural size.

Prints one line per page and exits 0 if all pages pass, 1 listing every broken page/image,
2 on a setup problem (no built book, no Chromium, Chromium did not start).
Chromium (its whole process group) is killed on exit, including on Ctrl-C / SIGTERM.
"""
from __future__ import annotations

import argparse
import fcntl
import functools
import http.server
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Directories (any path component) and file names that are not book pages.
SKIP_DIRS = frozenset({
    "_static", "_sources", "_images", "_downloads", "_modules", "_panels_static",
    "_sphinx_design_static", "_sphinx_javascript_frameworks_compat", ".doctrees", "jupyter_execute",
})
SKIP_FILES = frozenset({"genindex.html", "search.html", "py-modindex.html", "modindex.html"})
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install it with:  sudo apt-get install -y chromium"

# Evaluated in each page (awaitPromise). WAIT_MS is the per-image settle limit.
PAGE_PROBE_JS = r"""
(async (WAIT_MS) => {
  const root = ['article.bd-article', 'article[role="main"]', '[role="main"]', 'main', 'article']
               .map(sel => document.querySelector(sel)).find(el => el) || document.body;
  const imgs = root ? Array.from(root.querySelectorAll('img')) : [];
  for (const img of imgs) { if (img.loading === 'lazy') img.loading = 'eager'; }
  await Promise.all(imgs.map(img => img.complete ? null : new Promise(res => {
    img.addEventListener('load', res, {once: true});
    img.addEventListener('error', res, {once: true});
    setTimeout(res, WAIT_MS);
  })));
  const desc = el => el ? el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
                          + (el.className && typeof el.className === 'string'
                             ? '.' + el.className.trim().split(/\s+/).join('.') : '') : null;
  return {
    url: location.href,
    title: (document.title || '').trim(),
    readyState: document.readyState,
    hasMain: !!document.querySelector('main, article, [role="main"]'),
    root: desc(root),
    images: imgs.map(img => ({
      src: img.getAttribute('src') || '',
      url: img.currentSrc || img.src || '',
      alt: img.alt || '',
      complete: img.complete,
      naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight,
    })),
  };
})
"""


# --------------------------------------------------------------------------- pure helpers

def discover_pages(html_root: Path) -> list[str]:
    """Relative POSIX paths of the book's content pages under html_root, sorted (index first)."""
    html_root = Path(html_root)
    pages = []
    for path in html_root.rglob("*.html"):
        rel = path.relative_to(html_root)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if rel.name in SKIP_FILES or rel.name.startswith("."):
            continue
        if not path.is_file():
            continue
        pages.append(rel.as_posix())
    return sorted(pages, key=lambda p: (p != "index.html", p))


_META_REFRESH = re.compile(
    r"""<meta\s[^>]*http-equiv\s*=\s*["']?refresh["']?[^>]*content\s*=\s*["']\s*\d+\s*;\s*url\s*=\s*([^"'>\s]+)""",
    re.IGNORECASE,
)


def redirect_target(path: Path) -> str | None:
    """The URL of a Sphinx/Jupyter Book redirect stub (a file that is only a meta refresh), else None.

    Jupyter Book writes index.html as such a stub pointing at the root page of the TOC.
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if len(text) > 4096 or re.search(r"<(body|main|article)\b", text, re.IGNORECASE):
        return None
    m = _META_REFRESH.search(text)
    return m.group(1) if m else None


def redirect_problems(html_root: Path, page: str, target: str) -> list[str]:
    """A redirect stub is fine if it points at a local page that exists (or at an absolute URL)."""
    if "://" in target or target.startswith("//"):
        return []
    local = target.split("#")[0].split("?")[0]
    dest = (Path(html_root) / page).parent / local
    if not local or not dest.is_file():
        return [f"redirects to {target!r}, which does not exist"]
    return []


def image_problems(images: list[dict], failed: dict[str, str] | None = None) -> list[str]:
    """One message per image that did not render (incomplete or zero natural size).

    failed maps request URL -> why it failed (HTTP status / net error), to say why an image broke.
    """
    failed = failed or {}
    problems = []
    for img in images:
        w, h = img.get("naturalWidth", 0) or 0, img.get("naturalHeight", 0) or 0
        if img.get("complete") and w > 0 and h > 0:
            continue
        why = "did not finish loading" if not img.get("complete") else f"not rendered (natural size {w}x{h})"
        name = img.get("src") or img.get("url") or "<img without src>"
        url = img.get("url", "")
        detail = f"{failed[url]}: {url}" if url in failed else url
        problems.append(f"image {name!r} {why}" + (f" [{detail}]" if detail else ""))
    return problems


def page_problems(result: dict) -> list[str]:
    """All problems of one page from the collected result (navigation facts + in-page probe)."""
    problems = []
    if result.get("timeout"):
        problems.append(result["timeout"])
    if result.get("nav_error"):
        problems.append(f"navigation failed: {result['nav_error']}")
    status = result.get("status")
    if status is not None and not 200 <= status < 300:
        problems.append(f"HTTP status {status}")
    probe = result.get("probe")
    if probe is None:
        if not problems:
            problems.append("page could not be inspected")
        return problems
    if str(probe.get("url", "")).startswith("chrome-error://"):
        problems.append("Chromium error page")
    if not probe.get("title"):
        problems.append("page has no <title>")
    if not probe.get("hasMain"):
        problems.append("page has no <main>/<article> element")
    problems.extend(image_problems(probe.get("images", []), result.get("failed_urls")))
    return problems


def find_chromium(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if (os.path.isfile(explicit) and os.access(explicit, os.X_OK)) or shutil.which(explicit) else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# --------------------------------------------------------------------------- local http server

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass


class BookServer:
    """http.server on 127.0.0.1:<random port> serving html_root, in a daemon thread."""

    def __init__(self, html_root: Path):
        handler = functools.partial(_QuietHandler, directory=str(html_root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="book-http", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- DevTools over a pipe

class CDPError(RuntimeError):
    pass


class Chromium:
    """Headless Chromium driven through --remote-debugging-pipe (fd 3: commands in, fd 4: replies out)."""

    def __init__(self, binary: str, extra_args: list[str] | None = None):
        self.binary = binary
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.profile = None
        self._next_id = 0
        self._buf = b""
        self._events: list[dict] = []

    # -- process
    def start(self, timeout: float = 30.0):
        self.profile = tempfile.TemporaryDirectory(prefix="check-book-chromium-")
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # Move the child's ends above fd 10 so the dup2 to 3/4 below cannot clobber one another.
        hi_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_child_r, from_child_w):
            os.close(fd)

        def child_fds():  # runs in the child before exec; dup2 clears close-on-exec on 3 and 4
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [
            self.binary, "--headless", "--remote-debugging-pipe",
            f"--user-data-dir={self.profile.name}",
            "--no-sandbox",  # needed as root / in containers; only our own local pages are opened
            "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions",
            "--no-first-run", "--no-default-browser-check", "--no-proxy-server",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
            "--window-size=1280,1024",
            *self.extra_args, "about:blank",
        ]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=child_fds, pass_fds=(3, 4), close_fds=True, start_new_session=True,
        )
        os.close(hi_r)
        os.close(hi_w)
        self._wfd, self._rfd = to_child_w, from_child_r
        # Drain stderr in the background so chromium never blocks on a full pipe; keep the tail.
        self.stderr_tail: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        try:
            self.send("Browser.getVersion", timeout=timeout)
        except CDPError as exc:
            raise CDPError(f"Chromium did not start ({exc}); stderr tail:\n" + "".join(self.stderr_tail[-15:])) from None

    def _drain_stderr(self):
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr_tail.append(line.decode("utf-8", "replace"))
            del self.stderr_tail[:-50]

    def close(self):
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout=5)
                except (CDPError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            # Chromium was started in its own session: kill the whole group (renderers, zygote, ...).
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for fd in (self._wfd, self._rfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.proc = None
            if self.profile is not None:
                self.profile.cleanup()
                self.profile = None

    # -- protocol
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CDPError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._rfd], [], [], min(remaining, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    raise CDPError(f"Chromium exited with code {self.proc.returncode}")
                continue
            chunk = os.read(self._rfd, 1 << 20)
            if not chunk:
                raise CDPError("Chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._wfd, data):]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error'].get('message', reply['error'])}")
                return reply.get("result", {})
            if "method" in reply:
                self._events.append(reply)

    def events(self, deadline: float, wait: bool = True):
        """Yield queued events, then (if wait) new ones until deadline (raises CDPError at deadline)."""
        while self._events:
            yield self._events.pop(0)
        while wait:
            yield self._read_message(deadline)

    def discard_events(self):
        self._events.clear()


# --------------------------------------------------------------------------- the check

@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    n_images: int = 0
    title: str = ""
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


def check_page(browser: Chromium, session: str, url: str, page_timeout: float) -> dict:
    """Navigate one page and collect navigation facts plus the in-page probe."""
    result: dict = {"status": None, "nav_error": None, "probe": None, "timeout": None,
                    "failed_requests": [], "failed_urls": {}, "js_errors": []}
    deadline = time.monotonic() + page_timeout
    browser.discard_events()
    nav = browser.send("Page.navigate", {"url": url}, session=session, timeout=page_timeout)
    if nav.get("errorText"):
        result["nav_error"] = nav["errorText"]
    requests: dict[str, str] = {}
    loaded = False
    try:
        for ev in browser.events(deadline):
            if ev.get("sessionId") != session:
                continue
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                requests[p["requestId"]] = p["request"]["url"]
            elif method == "Network.responseReceived":
                status = p["response"].get("status")
                if p.get("type") == "Document" and p["response"].get("url", "").split("#")[0] == url.split("#")[0]:
                    result["status"] = status
                elif status and status >= 400:
                    result["failed_requests"].append(f"{status} {p['response'].get('url')}")
                    result["failed_urls"][p["response"].get("url")] = f"HTTP {status}"
            elif method == "Network.loadingFailed" and not p.get("canceled"):
                failed_url = requests.get(p["requestId"], "?")
                result["failed_requests"].append(f"{p.get('errorText')} {failed_url}")
                result["failed_urls"].setdefault(failed_url, p.get("errorText", "failed"))
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                result["js_errors"].append((d.get("exception") or {}).get("description") or d.get("text", "?"))
            elif method == "Page.loadEventFired":
                loaded = True
                break
    except CDPError as exc:
        if "timed out" not in str(exc):
            raise
    if not loaded:
        result["timeout"] = f"no load event within {page_timeout:.0f} s"
        return result
    remaining = max(1.0, deadline - time.monotonic())
    wait_ms = int(max(500, (remaining - 1) * 1000))
    probe = browser.send(
        "Runtime.evaluate",
        {"expression": f"({PAGE_PROBE_JS.strip()})({wait_ms})", "awaitPromise": True,
         "returnByValue": True},
        session=session, timeout=remaining + 5,
    )
    if "exceptionDetails" in probe:
        result["nav_error"] = result["nav_error"] or f"probe script failed: {probe['exceptionDetails'].get('text')}"
    else:
        result["probe"] = probe.get("result", {}).get("value")
    return result


def run_check(html_root: Path, chromium: str, page_timeout: float = 30.0, strict: bool = False,
              out=sys.stdout) -> int:
    html_root = Path(html_root).resolve()
    if not (html_root / "index.html").is_file():
        print(f"check-book: no built book at {html_root} (index.html missing); build it first "
              f"(jupyter-book build book/)", file=sys.stderr)
        return 2
    pages = discover_pages(html_root)
    print(f"check-book: {len(pages)} page(s) under {html_root} with {chromium}", file=out, flush=True)
    reports: list[PageReport] = []
    js_errors: dict[str, list[str]] = {}  # first line of the error -> pages
    t0 = time.monotonic()
    browser: Chromium | None = None

    def open_browser() -> tuple[Chromium, str]:
        b = Chromium(chromium)
        try:
            b.start()
            target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            sess = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for method in ("Page.enable", "Network.enable", "Runtime.enable"):
                b.send(method, session=sess)
            b.send("Network.setCacheDisabled", {"cacheDisabled": True}, session=sess)
        except BaseException:
            b.close()
            raise
        return b, sess

    with BookServer(html_root) as server:
        try:
            try:
                browser, session = open_browser()
            except (CDPError, OSError) as exc:
                print(f"check-book: could not drive Chromium at {chromium}: {exc}", file=sys.stderr)
                return 2
            for page in pages:
                started = time.monotonic()
                rep = PageReport(page)
                target = redirect_target(html_root / page)
                if target is not None:  # a meta-refresh stub (index.html): checked on disk, not rendered
                    rep.problems = redirect_problems(html_root, page, target)
                    reports.append(rep)
                    print(f"{'ok  ' if not rep.problems else 'FAIL'} {page}  redirect -> {target}", file=out, flush=True)
                    for prob in rep.problems:
                        print(f"     - {prob}", file=out)
                    continue
                if browser is None:  # the previous page wedged the browser: start a fresh one
                    try:
                        browser, session = open_browser()
                    except (CDPError, OSError) as exc:
                        print(f"check-book: could not restart Chromium: {exc}; stopping", file=sys.stderr)
                        break
                try:
                    res = check_page(browser, session, server.base + page, page_timeout)
                except CDPError as exc:
                    res = {"nav_error": f"DevTools error: {exc}", "probe": None}
                if res.get("probe") is None or browser.proc is None or browser.proc.poll() is not None:
                    # A page that timed out can leave its renderer busy (and the next page would share
                    # it); after any such failure the next page gets a new browser.
                    browser.close()
                    browser = None
                rep.problems = page_problems(res)
                probe = res.get("probe") or {}
                rep.n_images = len(probe.get("images", []))
                rep.title = probe.get("title", "")
                img_urls = {img.get("url") for img in probe.get("images", [])}
                rep.warnings = [f"failed request: {r}" for r in res.get("failed_requests", [])
                                # the browser's own favicon probe, and images already reported above
                                if not r.endswith("/favicon.ico") and r.split(" ", 1)[-1] not in img_urls]
                for err in res.get("js_errors", []):
                    js_errors.setdefault(err.splitlines()[0] if err else "?", []).append(page)
                if strict:
                    rep.problems += rep.warnings + [f"JavaScript error: {e}" for e in res.get("js_errors", [])]
                    rep.warnings = []
                rep.seconds = time.monotonic() - started
                reports.append(rep)
                status = "ok  " if not rep.problems else "FAIL"
                print(f"{status} {page}  images={rep.n_images}  {rep.seconds:.1f}s  title={rep.title[:60]!r}",
                      file=out, flush=True)
                for w in rep.warnings:
                    print(f"     warning: {w}", file=out)
                for prob in rep.problems:
                    print(f"     - {prob}", file=out)
        finally:
            if browser is not None:
                browser.close()
    if js_errors and not strict:
        # Jupyter Book 1.0.4 throws "Identifier 'THEBE_JS_URL' has already been declared" on every
        # page (sphinx-thebe's script is included twice): harmless, so reported, not failed on.
        print("check-book: JavaScript errors seen (not failures; --strict fails on them):", file=out)
        for err, where in js_errors.items():
            print(f"  {err}  [{len(where)} page(s), e.g. {where[0]}]", file=out)
    n_img = sum(r.n_images for r in reports)
    broken = [r for r in reports if r.problems]
    missing = len(pages) - len(reports)
    elapsed = time.monotonic() - t0
    if broken or missing:
        print(f"\ncheck-book: FAILED: {len(broken)} of {len(pages)} page(s) broken"
              + (f", {missing} not checked" if missing else "") + f" ({elapsed:.1f} s):", file=out)
        for r in broken:
            for prob in r.problems:
                print(f"  {r.page}: {prob}", file=out)
        return 1
    print(f"check-book: OK: {len(reports)} page(s), {n_img} image(s) rendered ({elapsed:.1f} s)", file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", type=Path, default=here / "_build" / "html",
                    help="built book directory (default: book/_build/html)")
    ap.add_argument("--chromium", default=None,
                    help="Chromium binary (default: first of %s on PATH)" % ", ".join(CHROMIUM_NAMES))
    ap.add_argument("--timeout", type=float, default=30.0, help="time limit per page in seconds (default 30)")
    ap.add_argument("--strict", action="store_true",
                    help="also fail on failed sub-resource requests and JavaScript errors (else warnings)")
    args = ap.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print(f"check-book: Chromium not found ({args.chromium or ' / '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}",
              file=sys.stderr)
        return 2
    # Turn SIGTERM/SIGHUP into SystemExit so the finally blocks kill Chromium and stop the server.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    return run_check(args.html, chromium, page_timeout=args.timeout, strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
