"""Rebuild the committed text files in data/text/ from the gensim 4.4.0 wheel.

Why: the paper evaluates on WikiText-2, which needs the dataset hub. This machine has only package
registries, so we take real text that ships inside a PyPI wheel: gensim's test data holds a
206-page sample of an English Wikipedia XML dump and Lee et al.'s ABC news corpus. The wheel is
only downloaded and read as a zip archive; gensim is never installed or imported.

Run from the repository root:  .venv/bin/python data/prepare.py
(`data/prepare.py benchmarks` exports the zero-shot benchmarks instead: data/benchmarks.py.)
The output is deterministic (same bytes on every run).
"""
from __future__ import annotations

import bz2
import hashlib
import io
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import mwparserfromhell

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wheels"
OUT = ROOT / "data" / "text"
GENSIM = "gensim==4.4.0"
WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
NEWS_MEMBER = "gensim/test/test_data/lee_background.cor"
NEWS_VAL_MEMBER = "gensim/test/test_data/lee.cor"  # 50 further ABC stories, disjoint from lee_background
# sha256 of the two members in the gensim 4.4.0 wheel used to build the committed files.
SHA256 = {
    WIKI_MEMBER: "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
    NEWS_MEMBER: "5d78d6dafd953bbf65797bef09a9ffb9ec430583381be705f8fd460000f370fb",
    NEWS_VAL_MEMBER: "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
}

# Split rules (see data/README.md).
WIKI_TEST_FRACTION = 0.20  # share of Wikipedia words that go to the test split
WIKI_SEED = 0  # seeds the shuffle of article titles that decides the split
NEWS_CALIB_STORIES = 150  # first 150 of the 300 Lee stories -> calibration, the rest -> test
# The Wikipedia validation split: whole calibration articles that no committed calibration window
# touches (seed 0; 8, 16, 64 and 128 windows of 256 tokens, SmolLM2 and Gemma-3 tokenizers), found
# by data/find_validation.py. They stay inside wiki_calib.txt (so every committed calibration window
# is byte-identical); calibration_batches redraws any other seed's window that would overlap them.
WIKI_VAL_TITLES = ("Academy Award for Best Production Design", "International Atomic Time", "Astronomer",
                   "Austroasiatic languages", "American Football Conference", "Argument (disambiguation)",
                   "Affirming the consequent", "Animal (disambiguation)", "Adventure", "Asia Minor (disambiguation)",
                   "List of anthropologists", "Algorithms (journal)", "Ampere")
MIN_WORDS = 6  # paragraphs with fewer words (captions, list stubs, leftovers) are dropped
STOP_SECTIONS = {"references", "see also", "external links", "notes", "further reading",
                 "footnotes", "bibliography", "sources", "citations", "notes and references"}

REF_RE = re.compile(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", re.S | re.I)
COMMENT_RE = re.compile(r"<!--.*?-->", re.S)
HEADING_RE = re.compile(r"^(={2,6})\s*(.+?)\s*\1\s*$", re.M)
SPACE_RE = re.compile(r"[ \t\u00a0]+")
OPEN_PUNCT_RE = re.compile(r"\(\s*(?:[;,]\s*)+")
CLOSE_PUNCT_RE = re.compile(r"\s*(?:[;,]\s*)+\)")
EMPTY_PARENS_RE = re.compile(r"\s*\(\s*\)")
DROP_TAGS = {"table", "gallery", "timeline", "imagemap", "graph"}
MARKUP_RE = re.compile(r"\[\[|\]\]|\{\||\|\}|^[|!]")  # leftovers of broken markup: drop the line
MEDIA_PREFIXES = ("file:", "image:", "media:", ":file:", ":image:")


def wheel_path() -> Path:
    """The cached gensim wheel, downloaded once with pip (the only network access)."""
    found = sorted(CACHE.glob("gensim-4.4.0-*.whl"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", GENSIM, "-d", str(CACHE)]
    print("downloading", GENSIM, "->", CACHE)
    subprocess.run(cmd, check=True)
    found = sorted(CACHE.glob("gensim-4.4.0-*.whl"))
    if not found:
        sys.exit(f"pip download did not leave a gensim 4.4.0 wheel in {CACHE}")
    return found[0]


def drop_non_prose(code: mwparserfromhell.wikicode.Wikicode) -> None:
    """Remove [[File:...]] / [[Image:...]] links (strip_code would keep their 'thumb|...' captions)
    and tables / galleries (strip_code flattens them into rows of numbers and markup)."""
    while True:
        found = [link for link in code.filter_wikilinks()
                 if str(link.title).strip().lower().startswith(MEDIA_PREFIXES)]
        found += [tag for tag in code.filter_tags() if str(tag.tag).strip().lower() in DROP_TAGS]
        if not found:
            return
        try:
            code.remove(found[0])
        except ValueError:  # already gone with an enclosing node
            pass


def tidy(line: str) -> str:
    """Collapse spaces and the empty brackets left by removed templates: 'Aristotle (; , ...'."""
    line = SPACE_RE.sub(" ", line).strip()
    line = OPEN_PUNCT_RE.sub("(", line)
    line = CLOSE_PUNCT_RE.sub(")", line)
    line = EMPTY_PARENS_RE.sub("", line)
    return SPACE_RE.sub(" ", line).strip()


def clean_block(wikitext: str) -> list[str]:
    """Plain-text paragraphs of one section body, short lines dropped."""
    code = mwparserfromhell.parse(wikitext)
    drop_non_prose(code)
    text = code.strip_code(normalize=True, collapse=True)
    out = []
    for line in text.split("\n"):
        line = tidy(line)
        if len(line.split()) >= MIN_WORDS and not MARKUP_RE.search(line):
            out.append(line)
    return out


def clean_title(wikitext: str) -> str:
    text = mwparserfromhell.parse(wikitext).strip_code(normalize=True, collapse=True)
    return SPACE_RE.sub(" ", text.replace("\n", " ")).strip()


def clean_article(title: str, wikitext: str) -> list[str] | None:
    """WikiText-style lines of one article (' = Title = ', ' == Section == ', paragraphs)."""
    wikitext = COMMENT_RE.sub("", wikitext)
    wikitext = REF_RE.sub("", wikitext)
    parts = HEADING_RE.split(wikitext)  # [lead, '==', title, body, '===', title, body, ...]
    lines = [f" = {title} = "]
    n_body = 0
    body = clean_block(parts[0])
    lines += body
    n_body += len(body)
    pending: list[str] = []  # headers waiting for a paragraph (empty sections are not written)
    for i in range(1, len(parts), 3):
        marks, head, block = parts[i], clean_title(parts[i + 1]), parts[i + 2]
        if head.lower().strip(" :") in STOP_SECTIONS:
            break
        level = len(marks)
        pending = [p for p in pending if len(p.split()[0]) < level]
        if head:
            pending.append(f" {marks} {head} {marks} ")
        body = clean_block(block)
        if body:
            lines += pending + body
            pending = []
            n_body += len(body)
    return lines if n_body else None


def read_wiki(raw: bytes) -> list[tuple[str, list[str]]]:
    """(title, lines) of every main-namespace, non-redirect article, in dump order."""
    articles = []
    for _, elem in ET.iterparse(io.BytesIO(raw), events=("end",)):
        if not elem.tag.endswith("}page"):
            continue
        ns = elem.find("{*}ns")
        title = elem.findtext("{*}title") or ""
        text = elem.findtext("{*}revision/{*}text") or ""
        redirect = elem.find("{*}redirect") is not None or text.lstrip().upper().startswith("#REDIRECT")
        if ns is not None and ns.text == "0" and not redirect:
            lines = clean_article(title, text)
            if lines:
                articles.append((title, lines))
        elem.clear()
    return articles


def n_words(lines: list[str]) -> int:
    return sum(len(line.split()) for line in lines)


def split_wiki(articles: list[tuple[str, list[str]]]) -> tuple[list, list]:
    """Whole articles to one split: a seeded shuffle of the titles, then articles go to test
    until it holds WIKI_TEST_FRACTION of the words. Both splits keep dump order."""
    total = sum(n_words(lines) for _, lines in articles)
    order = sorted(title for title, _ in articles)
    random.Random(WIKI_SEED).shuffle(order)
    words = {title: n_words(lines) for title, lines in articles}
    test_titles, acc = set(), 0
    for title in order:
        if acc >= WIKI_TEST_FRACTION * total:
            break
        test_titles.add(title)
        acc += words[title]
    calib = [a for a in articles if a[0] not in test_titles]
    test = [a for a in articles if a[0] in test_titles]
    return calib, test


def wiki_text(articles: list[tuple[str, list[str]]]) -> str:
    # One block per line, blocks separated by a blank line: the "\n\n" join of WikiText rows.
    return "\n\n".join(line for _, lines in articles for line in lines) + "\n"


def read_news(raw: bytes, encoding: str = "utf-8") -> list[str]:
    stories = []
    for line in raw.decode(encoding).splitlines():
        line = SPACE_RE.sub(" ", line).strip()
        if line:
            stories.append(line)
    return stories


def write(name: str, text: str, docs: int, unit: str) -> None:
    path = OUT / name
    data = text.encode("utf-8")
    path.write_bytes(data)
    print(f"{str(path.relative_to(ROOT)):28s} {docs:5d} {unit:9s} {len(text.split()):8d} words {len(data):9d} bytes")


def main() -> None:
    whl = wheel_path()
    with zipfile.ZipFile(whl) as z:
        members = {name: z.read(name) for name in (WIKI_MEMBER, NEWS_MEMBER, NEWS_VAL_MEMBER)}
    for name, blob in members.items():
        if hashlib.sha256(blob).hexdigest() != SHA256[name]:
            print(f"warning: {name} in {whl.name} differs from the one the committed files were built from",
                  file=sys.stderr)
    wiki_raw = bz2.decompress(members[WIKI_MEMBER])
    news_raw = members[NEWS_MEMBER]
    articles = read_wiki(wiki_raw)
    calib, test = split_wiki(articles)
    stories = read_news(news_raw)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"source: {whl.name}")
    write("wiki_calib.txt", wiki_text(calib), len(calib), "articles")
    write("wiki_test.txt", wiki_text(test), len(test), "articles")
    write("news_calib.txt", "\n\n".join(stories[:NEWS_CALIB_STORIES]) + "\n", NEWS_CALIB_STORIES, "stories")
    write("news_test.txt", "\n\n".join(stories[NEWS_CALIB_STORIES:]) + "\n", len(stories) - NEWS_CALIB_STORIES,
          "stories")
    val = [a for a in calib if a[0] in WIKI_VAL_TITLES]
    write("wiki_val.txt", wiki_text(val), len(val), "articles")
    val_stories = read_news(members[NEWS_VAL_MEMBER], "latin-1")  # lee.cor is Latin-1 (a pound sign)
    write("news_val.txt", "\n\n".join(val_stories) + "\n", len(val_stories), "stories")


if __name__ == "__main__":
    if sys.argv[1:] == ["benchmarks"]:  # the zero-shot benchmarks: see data/benchmarks.py
        sys.path.insert(0, str(Path(__file__).parent))
        import benchmarks
        benchmarks.main()
    else:
        main()
