"""trsp compare, zero-shot and the results cache on tiny models (seconds)."""
import json

import pytest

from trsp_lib.compare import compare, resolve_methods, table
from trsp_lib.profiles import load
from trsp_lib.method.trsp import TRSPConfig, budget


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TRSP_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("TRSP_FRESH", raising=False)
    return tmp_path / "results"


def test_compare_rows_budget_tables_and_resume(tiny_model_dir, tmp_path, results_dir, capsys):
    out = tmp_path / "cmp"
    rows = compare(model=str(tiny_model_dir), ratios=[0.34], methods="trsp,shortgpt,reverse", out=out, profile="tiny",
                   limit=0, criterion_samples=4, speed=False)
    labels = [r["method"] for r in rows]
    assert labels == ["dense", "trsp", "shortgpt", "reverse", "shortgpt+ft", "reverse+ft"]
    cfg, _ = load("tiny")
    by = {r["method"]: r for r in rows}
    assert all(r["n_removed"] == 2 and len(set(r["removed"])) == 2 for r in rows[1:])
    assert by["reverse"]["removed"] == [4, 3]                       # the layers before the last of 6
    assert by["shortgpt+ft"]["removed"] == by["shortgpt"]["removed"]  # same layers, then the control
    assert by["shortgpt+ft"]["ft_steps"] == budget(cfg, 2).steps == len(by["trsp"]["trajectory"])
    assert by["shortgpt+ft"]["ppl_wiki"] != by["shortgpt"]["ppl_wiki"]  # the fine-tune changed the model
    csv = (out / "results.csv").read_text().splitlines()
    assert csv[0].startswith("method,") and len(csv) == 7
    saved = json.loads((out / "results.json").read_text())
    assert saved["params"]["methods"] == ["trsp", "shortgpt", "reverse"] and saved["provenance"]["trsp_lib"]
    assert list(table(rows).columns[:5]) == ["method", "ratio", "n_removed", "ppl_wiki", "ppl_news"]
    capsys.readouterr()
    again = compare(model=str(tiny_model_dir), ratios=[0.34], methods="trsp,shortgpt,reverse", out=out, profile="tiny",
                    limit=0, criterion_samples=4, speed=False)
    printed = capsys.readouterr().out
    assert "computing" not in printed and "loading" not in printed  # every row reused, the model never loaded
    assert [r["key"] for r in again] == [r["key"] for r in rows]
    changed = compare(model=str(tiny_model_dir), ratios=[0.34], methods="reverse", out=out, profile="tiny", limit=0,
                      criterion_samples=4, speed=False, finetune_baselines=False, overrides={"n_samples": 4})
    printed = capsys.readouterr().out
    assert "[dense] cached" in printed and "[reverse-0.34] computing" in printed  # calibration changed: reverse reruns
    assert changed[1]["removed"] == [4, 3]


def test_compare_rejects_bad_input(tiny_model_dir, results_dir):
    with pytest.raises(ValueError, match="unknown method"):
        resolve_methods("trsp,shortgpt,magic")
    with pytest.raises(ValueError, match=r"ratios must be in \(0, 1\)"):
        compare(model=str(tiny_model_dir), ratios=[1.5], methods="reverse", profile="tiny", limit=0)
    with pytest.raises(TypeError, match="papermill pass it inside -y"):  # what `-p overrides '{...}'` delivers
        compare(model=str(tiny_model_dir), methods="reverse", profile="tiny", limit=0, overrides='{"lambda1": 0.02}')
    assert resolve_methods("all")[0] == "trsp" and "laco" in resolve_methods("all")


def test_zero_shot_on_the_same_seeded_items(tiny_model_dir):
    from trsp_lib.models import load_model
    from trsp_lib.zeroshot import sample_indices, zero_shot
    model, tok = load_model(str(tiny_model_dir))
    r = zero_shot(model, tok, tasks=["piqa", "winogrande"], limit=3, seed=1, batch_size=4)
    assert set(r["tasks"]) == {"piqa", "winogrande"} and all(t["n"] == 3 for t in r["tasks"].values())
    assert "acc_norm" in r["tasks"]["piqa"] and "acc_norm" not in r["tasks"]["winogrande"]
    assert r["average_metric"] == {"piqa": "acc_norm", "winogrande": "acc"}
    assert r["average"] == pytest.approx((r["tasks"]["piqa"]["acc_norm"] + r["tasks"]["winogrande"]["acc"]) / 2)
    assert sample_indices("piqa", 3, 1) == sample_indices("piqa", 3, 1) != sample_indices("piqa", 3, 2)
    with pytest.raises(ValueError, match="unknown zero-shot task"):
        zero_shot(model, tok, tasks=["mmlu"], limit=2)


def test_missing_benchmark_data_says_how_to_make_it(tmp_path, monkeypatch):
    from trsp_lib.data import DataError, data_dir
    from trsp_lib.zeroshot import task_config
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "piqa.yaml").write_text((data_dir() / "tasks" / "piqa.yaml").read_text())
    monkeypatch.setenv("TRSP_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="prepare.py benchmarks"):
        task_config("piqa")


def test_cached_reuses_and_fresh_recomputes(results_dir, monkeypatch):
    from trsp_lib.results import cached
    calls = []

    def compute():
        calls.append(1)
        return {"value": len(calls)}

    assert cached("demo", {"a": 1}, compute) == {"value": 1}
    assert cached("demo", {"a": 1}, compute) == {"value": 1} and len(calls) == 1
    assert cached("demo", {"a": 2}, compute) == {"value": 2}          # another parameter: computed
    stored = json.loads(next((results_dir / "demo").glob("*.json")).read_text())
    assert {"params", "key", "result", "provenance", "wall_s"} <= set(stored)
    monkeypatch.setenv("TRSP_FRESH", "1")
    assert cached("demo", {"a": 1}, compute) == {"value": 3}


def test_stale_benchmark_export_is_refused_and_format_matches(tmp_path, monkeypatch):
    import importlib.util

    from trsp_lib.data import DataError, data_dir
    from trsp_lib.zeroshot import TASKS_VERSION, task_config
    spec = importlib.util.spec_from_file_location("benchmarks", data_dir() / "benchmarks.py")
    exporter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exporter)
    assert exporter.FORMAT == TASKS_VERSION
    (tmp_path / "tasks").mkdir()
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "tasks" / "piqa.yaml").write_text((data_dir() / "tasks" / "piqa.yaml").read_text())
    (tmp_path / "benchmarks" / "piqa.jsonl").write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n')
    (tmp_path / "benchmarks" / "FORMAT").write_text("1\n")
    monkeypatch.setenv("TRSP_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match="older data/benchmarks.py"):
        task_config("piqa")


def test_winogrande_is_scored_like_lm_eval():
    """Partial scoring: the option ends the context, the rest follows after lm-eval's one-space delimiter."""
    from trsp_lib.zeroshot import task_config
    cfg = task_config("winogrande")
    assert cfg.get("target_delimiter", " ") == " "
    first = json.loads(open(cfg["dataset_kwargs"]["data_files"]["test"]).readline())
    assert not first["continuation"].startswith(" ") and not first["contexts"][0].endswith(" ")


def test_same_layers_reuse_the_earlier_rows_scores(tiny_model_dir, results_dir, monkeypatch, capsys):
    """Two selection-only methods that remove the same layers give the same model: scored once."""
    from trsp_lib.baselines.criteria import reverse
    from trsp_lib.pipelines import SELECTIONS, criterion

    def first_two(model, calib, n):
        return [1, 2][:n]

    monkeypatch.setitem(SELECTIONS, "angular", criterion(reverse))  # a stand-in that must agree with reverse
    monkeypatch.setitem(SELECTIONS, "shortgpt", criterion(first_two))  # ... and one that must not
    rows = compare(model=str(tiny_model_dir), ratios=[0.34], methods="reverse,angular,shortgpt", profile="tiny",
                   limit=0, criterion_samples=4, speed=False)
    by = {r["method"]: r for r in rows}
    assert "removes the same layers as reverse: reusing" in capsys.readouterr().out
    assert by["angular"]["same_as"] == "reverse" and by["angular+ft"]["same_as"] == "reverse+ft"
    assert by["angular"]["ppl_wiki"] == by["reverse"]["ppl_wiki"]
    assert by["angular+ft"]["ppl_news"] == by["reverse+ft"]["ppl_news"] != by["angular"]["ppl_news"]
    assert by["angular+ft"]["ft_s"] == by["reverse+ft"]["ft_s"] > 0
    assert 0 <= by["angular+ft"]["prune_s"] - (by["angular"]["prune_s"] + by["reverse+ft"]["ft_s"]) < 1.0  # + removal
    assert (by["shortgpt"]["removed"] == [1, 2] and "same_as" not in by["shortgpt"]
            and "same_as" not in by["shortgpt+ft"])


def test_zero_shot_stderr_is_binomial_over_the_average():
    from trsp_lib.zeroshot import zs_stderr

    one = {"zs_average_metric": {"piqa": "acc_norm"}, "zs_n": {"piqa": 100}, "zs_piqa_acc_norm": 0.5,
           "zs_piqa_acc": 0.9}
    assert abs(zs_stderr(one) - 0.05) < 1e-12                 # sqrt(0.5 * 0.5 / 100), the metric the average uses
    two = {**one, "zs_average_metric": {"piqa": "acc_norm", "boolq": "acc"}, "zs_n": {"piqa": 100, "boolq": 100},
           "zs_boolq_acc": 0.5}
    assert abs(zs_stderr(two) - (2 * 0.0025) ** 0.5 / 2) < 1e-12
    assert zs_stderr({"ppl_wiki": 3.0}) != zs_stderr({"ppl_wiki": 3.0})  # NaN without zero-shot results


def test_finetune_only_the_listed_baselines(tiny_model_dir, results_dir):
    rows = compare(model=str(tiny_model_dir), ratios=[0.34], methods="shortgpt,reverse", profile="tiny", limit=0,
                   criterion_samples=4, speed=False, finetune_baselines="reverse")
    assert [r["method"] for r in rows] == ["dense", "shortgpt", "reverse", "reverse+ft"]
    with pytest.raises(ValueError, match="unknown method"):
        compare(model=str(tiny_model_dir), ratios=[0.34], methods="reverse", profile="tiny", limit=0,
                finetune_baselines="nope")


def test_pipelines_compose_selection_edits_and_healing(tiny_model_dir, tmp_path, results_dir, capsys):
    out = tmp_path / "cmp"
    plain = compare(model=str(tiny_model_dir), ratios=[0.34], methods="trsp,shortgpt", out=out, profile="tiny",
                    limit=0, criterion_samples=4, speed=False, finetune_baselines=False,
                    overrides={"protect_first": 1})
    rows = compare(model=str(tiny_model_dir), ratios=[0.34], methods="trsp,shortgpt", out=out, profile="tiny",
                   limit=0, criterion_samples=4, speed=False, finetune_baselines=False, overrides={"protect_first": 1},
                   pipelines="shortgpt+lin,shortgpt+kd,shortgpt+lin+ft,trsp+lin,trsp:kd")
    by = {r["method"]: r for r in rows}
    assert [r["key"] for r in rows[:3]] == [r["key"] for r in plain]  # adding pipelines keeps the plain rows' keys
    assert by["shortgpt+lin"]["removed"] == by["shortgpt+kd"]["removed"] == by["shortgpt"]["removed"]
    assert by["shortgpt+lin"]["lin"]["runs"] and by["shortgpt+lin"]["ft_steps"] == 0
    assert by["shortgpt+kd"]["ft_steps"] == by["shortgpt+lin+ft"]["ft_steps"] == len(by["trsp"]["trajectory"])
    assert 0 not in by["trsp"]["removed"]  # (a cut at layer 0 has no layer before it to compensate)
    assert by["trsp+lin"]["removed"] == by["trsp"]["removed"] and by["trsp+lin"]["ppl_wiki"] != by["trsp"]["ppl_wiki"]
    assert by["trsp:kd"]["ppl_wiki"] != by["trsp"]["ppl_wiki"]  # stage 2 trained on a different loss
    assert all(f"ppl_{d}" in by["shortgpt+lin"] for d in ("wiki_val", "news_val"))
    assert len({r["key"] for r in rows}) == len(rows)
    capsys.readouterr()
    compare(model=str(tiny_model_dir), ratios=[0.34], methods="trsp,shortgpt", out=out, profile="tiny", limit=0,
            criterion_samples=4, speed=False, finetune_baselines=False, pipelines="shortgpt+kd",
            heal={"temperature": 2.0}, overrides={"protect_first": 1})
    printed = capsys.readouterr().out
    assert "[shortgpt+kd-0.34] computing" in printed and "[shortgpt-0.34] cached" in printed


@pytest.mark.parametrize("label", ["magic+lin", "shortgpt+ft+lin", "laco+lin", "shortgpt+lin+zz"])
def test_bad_pipeline_labels_say_what_is_allowed(label):
    from trsp_lib.pipelines import parse

    with pytest.raises(ValueError, match="pipeline"):
        parse(label)
    p = parse("sleb+lin+kd")
    assert (p.base, [e.name for e in p.edits], p.heal.name) == ("sleb", ["lin"], "kd")


def test_a_kd_step_lowers_the_kl_to_the_dense_model():
    import copy

    import torch

    from trsp_lib.method.losses import kd_loss
    from trsp_lib.models import tiny_model
    from trsp_lib.surgery.removal import remove_layers
    from trsp_lib.method.trsp import finetune

    dense = tiny_model("llama", n_layers=4)
    calib = torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    student = copy.deepcopy(dense)
    remove_layers(student, [1])

    def kl() -> float:
        with torch.no_grad():
            return kd_loss(student(input_ids=calib).logits, dense(input_ids=calib).logits).item()

    before = kl()
    cfg = TRSPConfig(batch_size=2, grad_accum=1, lr=1e-3, warmup=0.0)
    trajectory = finetune(student, calib, 8, cfg, teacher=dense)
    assert kl() < 0.9 * before and trajectory[-1]["lm"] < trajectory[0]["lm"]
    assert kd_loss(dense(input_ids=calib).logits, dense(input_ids=calib).logits).item() == pytest.approx(0.0, abs=1e-6)


def test_rows_record_the_parameters_their_key_hashes(tiny_model_dir, tmp_path, results_dir):
    from trsp_lib.provenance import param_key

    out = tmp_path / "cmp"
    rows = compare(model=str(tiny_model_dir), ratios=[0.34], methods="reverse", out=out, profile="tiny", limit=0,
                   speed=False, finetune_baselines=False)
    for row in rows:
        assert param_key(row["params"]) == row["key"]
    assert rows[1]["params"]["calib"][3] == 0 and rows[1]["params"]["config"]["seed"] == 0  # seed readable


def test_healing_the_last_layers_trains_only_them_and_the_head():
    import copy

    import torch

    from trsp_lib.surgery.adapters import get_layers
    from trsp_lib.method.config import TRSPConfig
    from trsp_lib.models import tiny_model
    from trsp_lib.pipelines import parse
    from trsp_lib.surgery.removal import remove_layers
    from trsp_lib.method.trsp import finetune

    model = tiny_model("llama", n_layers=4)
    remove_layers(model, [1])
    before = copy.deepcopy(model)
    calib = torch.randint(3, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    cfg = parse("sleb+ft").configure(TRSPConfig(batch_size=2, grad_accum=1, lr=1e-3, warmup=0.0), {"heal": {"last": 1}})
    assert cfg.heal_last == 1
    finetune(model, calib, 4, cfg)
    changed = {n for (n, p), q in zip(model.named_parameters(), before.parameters()) if not torch.equal(p, q)}
    last = len(get_layers(model)) - 1
    assert changed and all(f"layers.{last}." in n or "norm" in n or "lm_head" in n or "embed" in n for n in changed)
    assert any(f"layers.{last}." in n for n in changed) and not any("layers.0." in n for n in changed)
    assert all(p.requires_grad for p in model.parameters())  # the next step trains every weight again
    with pytest.raises(ValueError, match="exceeds the model's 3 layers"):
        finetune(model, calib, 1, TRSPConfig(batch_size=2, grad_accum=1, heal_last=4))


def test_a_selection_is_computed_once_for_rows_scored_differently(tiny_model_dir, tmp_path, results_dir):
    run = lambda texts: compare(model=str(tiny_model_dir), ratios=[0.34], methods="shortgpt", profile="tiny",  # noqa: E731
                                limit=0, criterion_samples=4, speed=False, finetune_baselines=False,
                                out=tmp_path / "cmp", eval_texts={"wiki": texts})
    first, second = run("wiki"), run("news")
    a, b = first[-1], second[-1]
    assert a["ppl_wiki"] != b["ppl_wiki"]  # two rows: scored on other texts
    assert a["removed"] == b["removed"] and a["prune_s"] == b["prune_s"]  # one selection, its record reused
    assert len(list((tmp_path / "cmp" / "selection").glob("*.json"))) == 1  # kept beside the rows
    assert not (results_dir / "selection").exists()
