"""Put MathJax 3.2.2 (Apache-2.0) into book/_static/mathjax/ so formulas render without a CDN.

Why: Sphinx points MathJax at cdn.jsdelivr.net, which an offline reader (or this project's machines)
cannot reach. The npm registry can be reached, so set-up fetches the package tarball once (6 MB),
checks its sha256 and extracts only the ES5 bundle and its fonts. Generated, not committed.
"""
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

URL = "https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz"
SHA256 = "1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09"
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "book" / "_static" / "mathjax"
CACHE = ROOT / ".cache" / "mathjax-3.2.2.tgz"


def main() -> int:
    if (OUT / "tex-mml-chtml.js").exists():
        return 0
    if not CACHE.exists():
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = urllib.request.urlopen(URL, timeout=60).read()
        except OSError as err:
            print(f"fetch_mathjax: cannot download {URL} ({err}); formulas will need the CDN", file=sys.stderr)
            return 0
        CACHE.write_bytes(data)
    data = CACHE.read_bytes()
    if hashlib.sha256(data).hexdigest() != SHA256:
        print(f"fetch_mathjax: {CACHE} has the wrong sha256; delete it and rerun", file=sys.stderr)
        return 1
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if m.isfile() and (m.name == "package/es5/tex-mml-chtml.js"
                               or m.name.startswith("package/es5/output/chtml/fonts/woff-v2/")):
                dest = OUT / m.name.removeprefix("package/es5/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(tar.extractfile(m).read())
    print(f"fetch_mathjax: MathJax 3.2.2 in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
