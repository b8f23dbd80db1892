"""Zero-shot scoring that is fast and gives lm-eval's HFLM answers, item by item.

Why: stock HFLM runs one full forward per (context, continuation) pair, so an item's context is
computed once per choice, and the LM head and a log-softmax over the whole vocabulary run at every
position. `SharedPrefixLM` is an HFLM whose `_loglikelihood_tokens` packs each item as one token tree
(the choices' shared prefix once, then each choice's own tokens, `tree_mask` keeping them apart),
several items to a row and without padding to speak of, and runs the LM head at the scored positions
only. Tokenisation, tasks, metrics and aggregation stay lm-eval's (HFLM's `_encode_pair` splits
context and continuation).

The same math in another order moves a log-likelihood by about 1e-6. An item's answer can then
differ from HFLM's only when its choices nearly tie (or a token's greedy choice nearly ties), so
such items ("near-ties": a gap under `tolerance`) are re-scored by HFLM itself inside the very batch
stock lm-eval would have put them in: same tensors, same floats, same answers.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator

#: Architectures whose forward with explicit positions, a 4-D mask and `logits_to_keep` is checked
#: against HFLM in tests/test_zeroshot_engine.py; any other model is scored by HFLM.
FAST_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "gemma3_text", "phi")
#: Of those, the ones that take a mask per attention type (a dict keyed by `config.layer_types`' names).
DICT_MASK_TYPES = ("qwen2", "qwen3", "gemma2", "gemma3", "gemma3_text")
#: Near-tie tolerance per model dtype, (relative, absolute): a gap is near when under
#: `relative * Score.scale + absolute` nats, the scale of the rounding in a log-softmax. For float32
#: 5e-6 is ~10x the largest difference measured between the engines on SmolLM2-135M (4.4e-7 of
#: `scale` over 201 PIQA/HellaSwag/ARC-e requests); the half precisions are untested guesses.
TOLERANCE = {torch.float32: (5e-6, 1e-5), torch.float64: (1e-12, 1e-12), torch.bfloat16: (5e-2, 1e-2),
             torch.float16: (1e-2, 1e-3)}

Request = tuple[tuple[str, str], list[int], list[int]]


class Score(NamedTuple):
    """A request's (log-likelihood, greedy) as HFLM returns them, plus how near they are to rounding:
    `weak`: a greedy token within tolerance of another; `scale`: per token, the largest |logit| plus
    |log-probability|, summed (the magnitudes a float's rounding is relative to)."""

    ll: float
    greedy: bool
    weak: bool = False
    scale: float = 0.0


@dataclass
class Group:
    """Requests that share `prefix` (one item's choices): each row scores its last `scored` tokens."""

    rows: list[int]
    prefix: list[int]
    suffixes: list[list[int]] = field(default_factory=list)
    scored: list[int] = field(default_factory=list)

    @property
    def width(self) -> int:
        """Tokens of the group packed as one tree: the prefix once, then every suffix."""
        return len(self.prefix) + sum(map(len, self.suffixes))


def stock_sort_key(req: Request) -> tuple:
    """HFLM's request order: longest first, then by tokens (lm-eval's `_collate`)."""
    toks = req[1] + req[2]
    return -len(toks), tuple(toks)


def stock_group_key(req: Request) -> list[int]:
    """HFLM's logits-sharing key: context + continuation[:-1] (lm-eval's `_lookup_one_token_cont`)."""
    return req[-2] + req[-1][:-1]


def plan_groups(requests: list[Request], docs: list, max_length: int) -> tuple[list[Group], set[int]]:
    """One group per item (over its longest shared prefix, maybe empty); the requests HFLM must score instead.

    HFLM's own way is kept where ours would differ: left-truncated inputs, and requests that HFLM's
    logits cache would serve from another request's forward with a different split.
    """
    stock: set[int] = set()
    splits = defaultdict(set)
    for i, (_, ctx, cont) in enumerate(requests):
        splits[tuple(stock_group_key(requests[i]))].add(len(cont))
        if len(ctx) + len(cont) > max_length + 1:
            stock.add(i)
    by_doc = defaultdict(list)
    for i, req in enumerate(requests):
        if i not in stock and len(splits[tuple(stock_group_key(req))]) == 1:
            by_doc[docs[i]].append(i)
        else:
            stock.add(i)
    groups = []
    for rows in by_doc.values():
        full = [(requests[i][1] + requests[i][2])[:-1] for i in rows]  # HFLM's inputs; scored: the last len(cont)
        n = _common_prefix(full, min(len(requests[i][1]) - 1 for i in rows))
        groups.append(Group(rows, full[0][:n], [s[n:] for s in full], [len(requests[i][2]) for i in rows]))
    return groups, stock


def _common_prefix(seqs: list[list[int]], cap: int) -> int:
    """Length of the longest prefix every sequence shares, at most `cap`."""
    n = 0
    while n < cap and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def pack_batches(groups: list[Group], budget: int) -> list[list[list[Group]]]:
    """Batches of rows of whole groups, no group split: the longest first, each batch's rows as wide as its
    longest group, filled first-fit (little padding), as many rows as fit in `budget` tokens (at least one)."""
    batches: list[list[list[Group]]] = []
    width, fill = 0, []
    for g in sorted(groups, key=lambda g: -g.width):
        free = [r for r, used in enumerate(fill) if used + g.width <= width]
        if free:
            batches[-1][free[0]].append(g)
            fill[free[0]] += g.width
        elif batches and (len(fill) + 1) * width <= budget:
            batches[-1].append([g])
            fill.append(g.width)
        else:
            batches.append([[g]])
            width, fill = g.width, [g.width]
    return batches


def pack_rows(rows: list[list[Group]]) -> dict[str, torch.Tensor]:
    """The batch's tensors: each group as its prefix then each choice's suffix, groups side by side in a row,
    right-padded. `branch` numbers the prefixes and suffixes of a row, `root` is each token's prefix: a token
    sees the earlier tokens of its own branch and of its root (`tree_mask`); `keep`: the scored positions."""
    width = max(sum(g.width for g in row) for row in rows)
    ids, pos, branch, root = (torch.full((len(rows), width), v, dtype=torch.long) for v in (0, 0, -1, -1))
    keep = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, row in enumerate(rows):
        toks, p, br, rt, kp = [], [], [], [], []
        for g in row:  # the prefix as branch b0 (nothing scored), then each suffix from position len(prefix)
            b0, n = br[-1] + 1 if br else 0, len(g.prefix)
            for k, (x, m, start) in enumerate(zip([g.prefix, *g.suffixes], [0, *g.scored], [0] + [n] * len(g.scored))):
                toks += x
                p += range(start, start + len(x))
                br += [b0 + k] * len(x)
                rt += [b0] * len(x)
                kp += [False] * (len(x) - m) + [True] * m
        for out, x in zip((ids, pos, branch, root, keep), (toks, p, br, rt, kp)):
            out[r, :len(x)] = torch.tensor(x)
    return {"ids": ids, "pos": pos, "branch": branch, "root": root, "keep": keep}


def tree_mask(t: dict[str, torch.Tensor], window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """Additive [batch, 1, T, T] mask of `pack_rows`'s tree: causal within a branch and onto its root
    prefix, nothing else (padding sees padding only: no empty softmax row); `window`: a sliding window."""
    pos, branch = t["pos"], t["branch"]
    ok = (branch[:, None, :] == branch[:, :, None]) | (branch[:, None, :] == t["root"][:, :, None])
    ok &= pos[:, None, :] <= pos[:, :, None]
    if window:
        ok &= pos[:, :, None] - pos[:, None, :] < window
    return torch.zeros(ok.shape, dtype=dtype).masked_fill_(~ok, torch.finfo(dtype).min)[:, None]


def fragile_rows(results: dict[int, Score], requests: list[Request], docs: list, tol: tuple[float, float]) -> set[int]:
    """Rows whose rounding could change an answer: a near greedy-token margin (that row), and the choices
    of an item within tolerance of its best raw or length-normalised log-likelihood (acc, acc_norm) when
    two or more are. A choice farther below the best loses in HFLM's floats too: it needs no HFLM value.

    acc_norm divides by the choice's characters; the choice is the continuation with or without its
    leading delimiter, so both are checked. A Score's `scale` bounds its rounding (see TOLERANCE).
    """
    by_doc = defaultdict(list)
    for i in results:
        by_doc[docs[i]].append(i)
    fragile = {i for i in results if results[i].weak}
    for rows in by_doc.values():
        conts = [requests[i][0][1] for i in rows]
        norms = ([1] * len(rows), [max(len(c), 1) for c in conts], [max(len(c) - c[:1].isspace(), 1) for c in conts])
        for norm in norms if len(rows) > 1 else ():
            vals = [(results[i].ll / a, (tol[0] * results[i].scale + tol[1]) / a) for i, a in zip(rows, norm)]
            top, err = max(vals)
            near = [i for i, (x, ex) in zip(rows, vals) if top - x <= err + ex]
            fragile.update(near if len(near) > 1 else ())
    return fragile


class SharedPrefixLM(HFLM):
    """HFLM that scores each item as one packed token tree, its prefix computed once (answers: HFLM's).

    `batch_tokens`: tokens (padding included) per forward; on 2 CPU cores 4096 ran 1.3x faster than 2048
    and 1.5x faster than 512 (fewer, larger matrix products), 8192 no faster.
    """

    def __init__(self, *args, batch_tokens: int = 4096, tolerance: tuple[float, float] | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batch_tokens = batch_tokens
        self.tolerance = tolerance
        self.stats = {"requests": 0, "shared": 0, "stock": 0, "near_tie_rows": 0, "restored_rows": 0}
        self._docs: list | None = None

    def fast_supported(self) -> bool:
        """Whether this model and setting take the shared-prefix path (else stock HFLM scores all)."""
        model = self.model
        sharded = any(type(p).__name__ == "DTensor" for p in model.parameters())  # FSDP-sharded weights
        return (self.backend == "causal" and isinstance(self.batch_size, int) and not sharded
                and self.mixed_precision_dtype is None  # autocast: the tolerance would be the wrong dtype's
                and getattr(model.config, "model_type", None) in FAST_MODEL_TYPES
                and next(model.parameters()).dtype in TOLERANCE)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """HFLM's, remembering which item each request belongs to (its choices share a prefix)."""
        self._docs = [(r.task_name, r.doc_id) for r in requests]
        self.last_keys = [(r.task_name, r.doc_id, r.idx) for r in requests]  # last_scores' rows (tools/zs_throughput)
        try:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        finally:
            self._docs = None

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        docs, self._docs = self._docs, None
        if docs is None or len(docs) != len(requests) or not self.fast_supported():
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        groups, stock = plan_groups(requests, docs, self.max_length)
        exact = self._restore(requests, stock)  # HFLM's own values: exact, no rounding to fear
        results = {i: Score(*v) for i, v in exact.items()}
        tol = self.tolerance or TOLERANCE[next(self.model.parameters()).dtype]
        for batch in pack_batches(groups, self.batch_tokens):
            results.update({i: v for i, v in self._score_batch(batch, requests, tol).items() if i not in exact})
        fragile = fragile_rows(results, requests, docs, tol) - set(exact)
        redone = self._restore(requests, fragile)
        results.update({i: Score(*v) for i, v in redone.items()})
        self.last_scores = results
        for k, n in zip(self.stats, (len(requests), len(requests) - len(stock), len(stock), len(fragile), len(redone))):
            self.stats[k] += n
        return [(results[i].ll, results[i].greedy) for i in range(len(requests))]

    def _restore(self, requests: list[Request], wanted: set[int]) -> dict[int, tuple[float, bool]]:
        """HFLM's values for `wanted` (and their batch-mates): each stock batch that holds one is rebuilt
        as stock lm-eval builds it over all `requests` (order, size, padding) and scored by HFLM."""
        if not wanted:
            return {}
        cached = self.backend == "causal" and self.logits_cache
        key = (lambda i: tuple(stock_group_key(requests[i]))) if cached else (lambda i: i)
        members, index = defaultdict(list), {id(r): i for i, r in enumerate(requests)}
        for i in range(len(requests)):
            members[key(i)].append(i)
        order = Collator(requests, sort_fn=stock_sort_key, group_by="contexts" if cached else None,
                         group_fn=stock_group_key)
        out: dict[int, tuple[float, bool]] = {}
        for chunk in order.get_batched(n=self.batch_size):
            rows = [j for r in chunk for j in members[key(index[id(r)])]]
            if wanted.intersection(rows):
                scores = super()._loglikelihood_tokens([requests[j] for j in rows], disable_tqdm=True)
                out.update(zip(rows, scores))
        return out

    @torch.no_grad()
    def _score_batch(self, rows: list[list[Group]], requests: list[Request], tol: tuple[float, float]
                     ) -> dict[int, Score]:
        """One forward of `pack_rows`'s packed trees under their `tree_mask`, the LM head at the scored
        positions only (`logits_to_keep`: the logits of every position would cost more than the body)."""
        dev, t = self.device, pack_rows(rows)
        logits = self.model(input_ids=t["ids"].to(dev), attention_mask=self._mask(t), use_cache=False,
                            position_ids=t["pos"].to(dev), logits_to_keep=t["keep"].to(dev)).logits
        groups = [g for row in rows for g in row]  # the order of the kept positions: row by row
        return self._read_scores(logits, [i for g in groups for i in g.rows], [m for g in groups for m in g.scored],
                                 requests, tol)

    def _mask(self, t: dict[str, torch.Tensor]):
        """`tree_mask` as the model takes it: one per attention type where layers differ (sliding windows)."""
        cfg, dtype = self.model.config, next(self.model.parameters()).dtype
        window = getattr(cfg, "sliding_window", None)
        if getattr(cfg, "model_type", None) in DICT_MASK_TYPES:
            types = set(getattr(cfg, "layer_types", None) or ["full_attention"])
            return {k: tree_mask(t, window if k == "sliding_attention" else None, dtype).to(self.device)
                    for k in types}
        return tree_mask(t, window, dtype).to(self.device)

    def _read_scores(self, logits: torch.Tensor, rows: list[int], scored: list[int], requests: list[Request],
                     tol: tuple[float, float]) -> dict[int, Score]:
        """Each row's Score, read as HFLM reads it: log-softmax in `softmax_dtype`, the continuation
        tokens' log-probabilities summed; plus the rounding scale and greedy margins for near-ties."""
        lp = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        target = torch.tensor([t for i in rows for t in requests[i][2]], device=lp.device)
        top = lp.topk(2, dim=-1)
        mine = lp.gather(1, target[:, None])[:, 0]
        size = logits.abs().amax(-1).float() + mine.abs().float()  # what a log-softmax entry is rounded against
        hit = top.indices[:, 0] == target
        margin = torch.where(hit, top.values[:, 0] - top.values[:, 1], top.values[:, 0] - mine).float()
        weak = margin <= 2 * (tol[0] * size + tol[1])
        out, start = {}, 0
        for i, m in zip(rows, scored):
            seg = slice(start, start + m)
            out[i] = Score(float(mine[seg].sum()), bool(hit[seg].all()), bool(weak[seg].any()), float(size[seg].sum()))
            start += m
        return out
