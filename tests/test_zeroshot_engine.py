"""Zero-shot scoring: the offline tasks under stock lm-eval, and the fast engine against stock HFLM."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_stock_lm_eval_command_line_reads_the_offline_tasks_from_any_folder(tmp_path):
    """`lm_eval --include_path <repo>/data/tasks` on a saved pruned checkpoint, run from elsewhere."""
    from trsp_lib.surgery.removal import remove_layers, save_model
    from trsp_lib.tiny import tiny_model, tiny_tokenizer

    ckpt = save_model(remove_layers(tiny_model("llama", n_layers=4), [1]), tiny_tokenizer(), tmp_path / "pruned")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={ckpt},dtype=float32",
           "--device", "cpu", "--include_path", str(REPO / "data" / "tasks"), "--tasks", "trsp_piqa",
           "--limit", "4", "--batch_size", "4"]
    done = subprocess.run(cmd, cwd=elsewhere, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout + done.stderr
    assert re.search(r"\|trsp_piqa\|.*\|acc\s*\|.*\|\s*[01]\.\d+\|", table), table[-3000:]


def test_the_command_lines_loader_reads_the_librarys_items_in_its_order():
    """The `custom_dataset` hook and trsp_lib.zeroshot's absolute path give the same rows: same scores."""
    import datasets
    import importlib.util

    from trsp_lib.zeroshot import ALL_TASKS, task_config

    spec = importlib.util.spec_from_file_location("offline_data", REPO / "data" / "tasks" / "offline_data.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    for name in ALL_TASKS:
        cfg = task_config(name)
        assert "custom_dataset" not in cfg and Path(cfg["dataset_kwargs"]["data_files"]["test"]).is_absolute()
        mine = loader.load(data_files={"test": f"benchmarks/{name}.jsonl"}, version=1.0)["test"]
        library = datasets.load_dataset("json", data_files=cfg["dataset_kwargs"]["data_files"])["test"]
        assert mine.to_list() == library.to_list()


# --- the fast engine: plan, batches, near-ties, and answers against stock HFLM ---------------------------

def _req(ctx: list[int], cont: list[int], text: str = " x") -> tuple:
    return (("ctx", text), ctx, cont)


def test_an_items_choices_share_their_context_and_score_only_their_own_tokens():
    from trsp_lib.scoring import plan_groups

    reqs = [_req([5, 6, 7], [8, 9]), _req([5, 6, 7], [10]), _req([5, 6, 7], [8, 11, 12])]
    groups, stock = plan_groups(reqs, ["a", "a", "a"], max_length=100)
    assert not stock and len(groups) == 1
    g = groups[0]
    # the input is (ctx + cont)[:-1]; every scored position stays out of the cache: prefix = ctx[:-1]
    assert g.prefix == [5, 6] and g.suffixes == [[7, 8], [7], [7, 8, 11]] and g.scored == [2, 1, 3]


def test_winogrande_style_items_share_the_common_start_of_their_contexts():
    from trsp_lib.scoring import plan_groups

    reqs = [_req([5, 6, 20, 21], [30, 31]), _req([5, 6, 22], [30, 31])]  # different options, one continuation
    (g,), stock = plan_groups(reqs, [("w", 0), ("w", 0)], max_length=100)
    assert not stock and g.prefix == [5, 6] and g.suffixes == [[20, 21, 30], [22, 30]] and g.scored == [2, 2]


def test_what_stock_hflm_would_do_differently_is_left_to_it():
    from trsp_lib.scoring import plan_groups

    reqs = [_req(list(range(3, 13)), [40, 41]),  # 12 tokens > max_length + 1: HFLM truncates from the left
            _req([7], [8, 9]),                   # a one-token context: nothing shared, but packed all the same
            _req([50, 51], [52, 53]),            # HFLM's logits cache serves these two from one forward
            _req([50, 51, 52], [53])]            # ... with different context/continuation splits
    groups, stock = plan_groups(reqs, [0, 1, 2, 3], max_length=10)
    assert stock == {0, 2, 3} and [(g.rows, g.prefix, g.suffixes) for g in groups] == [([1], [], [[7, 8]])]


def test_items_are_packed_whole_into_rows_and_rows_into_batches_within_a_token_budget():
    from trsp_lib.scoring import Group, pack_batches

    groups = [Group([i], [1] * n, [[2] * 3], [2]) for i, n in enumerate([5, 40, 6, 38, 4, 30])]  # widths n + 3
    batches = pack_batches(groups, budget=130)
    assert [[[g.width for g in row] for row in b] for b in batches] == [[[43], [41], [33, 9]], [[8], [7]]]
    assert pack_batches(groups, budget=1) == [[[g]] for g in sorted(groups, key=lambda g: -g.width)]


def test_the_tree_mask_lets_a_choice_see_its_prefix_and_itself_only():
    import torch

    from trsp_lib.scoring import Group, pack_rows, tree_mask

    t = pack_rows([[Group([0, 1], [7, 8], [[9, 10], [11]], [2, 1]), Group([2], [5], [[6]], [1])]])
    assert t["ids"].tolist() == [[7, 8, 9, 10, 11, 5, 6]] and t["pos"].tolist() == [[0, 1, 2, 3, 2, 0, 1]]
    assert t["keep"].tolist() == [[False, False, True, True, True, False, True]]
    seen = (tree_mask(t, None, torch.float32)[0, 0] == 0).int().tolist()
    assert seen == [[1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0],
                    [1, 1, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1, 1]]
    windowed = (tree_mask(t, 2, torch.float32)[0, 0] == 0).int().tolist()
    assert windowed[3] == [0, 0, 1, 1, 0, 0, 0] and windowed[4] == [0, 1, 0, 0, 1, 0, 0]


def test_near_ties_of_acc_and_acc_norm_and_greedy_margins_are_found():
    from trsp_lib.scoring import Score, fragile_rows

    reqs = [(("q", " ab"), [1], [2]), (("q", " abcd"), [1], [3]), (("r", " a"), [1], [4]), (("r", " b"), [1], [5]),
            (("s", " a"), [1], [6])]
    docs = ["q", "q", "r", "r", "s"]
    tol = (1e-5, 1e-5)
    far = {0: Score(-2.0, False, False, 10.0), 1: Score(-4.0, False, False, 10.0),  # acc_norm: -1.0 vs -1.0
           2: Score(-1.0, False, False, 10.0), 3: Score(-3.0, False, False, 10.0),
           4: Score(-1.0, True, True, 10.0)}                                       # a greedy near-tie
    assert fragile_rows(far, reqs, docs, tol) == {0, 1, 4}
    far[1] = Score(-4.4, False, False, 10.0)
    assert fragile_rows(far, reqs, docs, tol) == {4}
    far[3] = Score(-1.0 - 5e-5, False, False, 10.0)  # within 1e-5 * 10 + 1e-5 of each other (twice)
    assert fragile_rows(far, reqs, docs, tol) == {2, 3, 4}
    reqs += [(("t", " a"), [1], [7]), (("t", " b"), [1], [8]), (("t", " c"), [1], [9])]
    docs += ["t"] * 3
    far.update({5: Score(-1.0, False, False, 10.0), 6: Score(-3.0, False, False, 10.0),
                7: Score(-3.0, False, False, 10.0)})  # a tie below the best cannot change the answer
    assert fragile_rows(far, reqs, docs, tol) == {2, 3, 4}
    far[6] = Score(-1.0 + 5e-5, False, False, 10.0)  # a tie at the top: those two only
    assert fragile_rows(far, reqs, docs, tol) == {2, 3, 4, 5, 6}


@pytest.fixture(scope="module")
def tiny_lm():
    from trsp_lib.scoring import SharedPrefixLM
    from trsp_lib.tiny import tiny_model, tiny_tokenizer

    return SharedPrefixLM(pretrained=tiny_model("llama", n_layers=2), tokenizer=tiny_tokenizer(), batch_size=3,
                          device="cpu")


def _pairs(lm, pairs):
    return [((c, x), *lm._encode_pair(c, x)) for c, x in pairs]


PAIRS = [("The cat sat on", " the mat"), ("The cat sat on", " a hat"), ("The cat sat on", " the mat"),
         ("Question: why?\nAnswer:", " because"), ("Question: why?\nAnswer:", " no"), ("Short", " one"),
         ("A much longer context than the others, to pad", " end"), ("Short", " two words")]
DOCS = [0, 0, 0, 1, 1, 2, 3, 2]


def test_restoring_rebuilds_stock_batches_exactly(tiny_lm):
    """A request re-scored alone gets the very floats stock HFLM gives it among all the requests."""
    from lm_eval.models.huggingface import HFLM

    reqs = _pairs(tiny_lm, PAIRS)
    stock = HFLM._loglikelihood_tokens(tiny_lm, reqs, disable_tqdm=True)
    for k in range(len(reqs)):
        assert tiny_lm._restore(reqs, {k})[k] == stock[k]
    assert [tiny_lm._restore(reqs, set(range(len(reqs))))[k] for k in range(len(reqs))] == stock


def test_shared_prefix_scores_match_stock_and_ties_come_back_exact(tiny_lm):
    from lm_eval.models.huggingface import HFLM

    reqs = _pairs(tiny_lm, PAIRS)
    stock = HFLM._loglikelihood_tokens(tiny_lm, reqs, disable_tqdm=True)
    before = dict(tiny_lm.stats)
    tiny_lm._docs = DOCS
    fast = tiny_lm._loglikelihood_tokens(reqs)
    restored = tiny_lm.stats["restored_rows"] - before["restored_rows"]
    assert [g for _, g in fast] == [g for _, g in stock]
    assert [x for x, _ in fast] == pytest.approx([x for x, _ in stock], rel=1e-6)
    assert fast[0] == fast[2] == stock[0] == stock[2]  # a duplicated choice is an exact tie: HFLM's floats
    assert 3 <= restored < len(reqs)  # the tie's stock batches only; the rest took the shared-prefix path


def test_padding_and_batch_mates_do_not_change_a_score(tiny_lm):
    from trsp_lib.scoring import plan_groups

    reqs = _pairs(tiny_lm, PAIRS)
    groups, _ = plan_groups(reqs, DOCS, tiny_lm.max_length)
    tol = (1e-5, 1e-5)
    together = tiny_lm._score_batch([groups], reqs, tol)  # every item in one row, side by side
    one_per_row = tiny_lm._score_batch([[g] for g in groups], reqs, tol)
    assert set(together) == set(one_per_row) == {i for g in groups for i in g.rows}
    for g in groups:
        alone = tiny_lm._score_batch([[g]], reqs, tol)
        for i in g.rows:
            for other in (together, one_per_row):
                assert alone[i].ll == pytest.approx(other[i].ll, rel=1e-6) and alone[i].greedy == other[i].greedy


def _answers(model, tok, engine, tasks, limit):
    from trsp_lib.zeroshot import item_answers, run_lm_eval

    out, names, _, lm = run_lm_eval(model, tok, tasks, limit, 0, 4, engine)
    lls = {(t, s["doc_id"]): [r[0][0] for r in s["resps"]] for t, n in names.items() for s in out["samples"][n]}
    return item_answers(out, names), lls, lm


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gemma2", "qwen2", "qwen3", "mistral", "phi"])
def test_fast_engine_answers_every_task_as_stock_hflm(arch):
    """acc and acc_norm item by item over every offline task (llama; the other architectures of FAST_MODEL_TYPES:
    three, their sliding windows included); log-likelihoods within float rounding."""
    from trsp_lib.tiny import tiny_model, tiny_tokenizer
    from trsp_lib.zeroshot import ALL_TASKS

    model, tok = tiny_model(arch, n_layers=2), tiny_tokenizer()
    tasks = ALL_TASKS if arch == "llama" else ("winogrande", "hellaswag", "lambada")  # windows of 4 to 6 tokens
    stock, stock_lls, _ = _answers(model, tok, "stock", tasks, 6)
    fast, fast_lls, lm = _answers(model, tok, "fast", tasks, 6)
    assert fast == stock and set(fast) == set(tasks)
    assert lm.stats["shared"] > 0.9 * lm.stats["requests"]
    for key, lls in stock_lls.items():
        assert fast_lls[key] == pytest.approx(lls, rel=1e-6)


def test_unsupported_models_and_the_stock_engine_score_as_hflm():
    from lm_eval.models.huggingface import HFLM

    from trsp_lib.tiny import tiny_model, tiny_tokenizer
    from trsp_lib.zeroshot import zero_shot

    model, tok = tiny_model("gpt2", n_layers=2), tiny_tokenizer()  # absolute positions: not on the fast path
    fast = zero_shot(model, tok, tasks=["piqa"], limit=4, batch_size=4)
    stock = zero_shot(model, tok, tasks=["piqa"], limit=4, batch_size=4, engine="stock")
    assert fast["engine"] == "fast" and stock["engine"] == "stock"
    assert fast["items"] == stock["items"] and fast["tasks"] == stock["tasks"]
    with pytest.raises(ValueError, match="engine must be one of"):
        zero_shot(model, tok, tasks=["piqa"], limit=4, engine="turbo")
    assert issubclass(__import__("trsp_lib.scoring", fromlist=["SharedPrefixLM"]).SharedPrefixLM, HFLM)
