"""Zero-shot scoring that is fast and gives lm-eval's HFLM answers, item by item.

Why: stock HFLM runs one full forward per (context, continuation) pair, so an item's context is
computed once per choice and the LM head runs at every position. `SharedPrefixLM` is an HFLM whose
`_loglikelihood_tokens` scores the requests of one item over their shared token prefix: the
prefix's key/value cache is computed once (LM head at its last position only), the choices' own
tokens run on it as one batch, items are batched by length. Tokenisation, tasks, metrics and
aggregation stay lm-eval's (HFLM's own `_encode_pair` splits context and continuation).

The same math in another order moves a log-likelihood by about 1e-6. An item's answer can then
differ from HFLM's only when its choices nearly tie (or a token's greedy choice nearly ties), so
such items ("near-ties": a gap under `tolerance`) are re-scored by HFLM itself inside the very batch
stock lm-eval would have put them in: same tensors, same floats, same answers.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator

#: Architectures whose forward with a left-padded cached prefix, explicit positions and a 2-D mask
#: is checked against HFLM in tests/test_zeroshot_engine.py; any other model is scored by HFLM.
FAST_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gemma2", "gemma3", "gemma3_text", "phi")
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


def stock_sort_key(req: Request) -> tuple:
    """HFLM's request order: longest first, then by tokens (lm-eval's `_collate`)."""
    toks = req[1] + req[2]
    return -len(toks), tuple(toks)


def stock_group_key(req: Request) -> list[int]:
    """HFLM's logits-sharing key: context + continuation[:-1] (lm-eval's `_lookup_one_token_cont`)."""
    return req[-2] + req[-1][:-1]


def plan_groups(requests: list[Request], docs: list, max_length: int) -> tuple[list[Group], set[int]]:
    """One group per item (over its longest shared prefix); the requests HFLM must score instead.

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
        seqs = [(requests[i][1] + requests[i][2])[:-1] for i in rows]
        cap = min(len(s) - len(requests[i][2]) for s, i in zip(seqs, rows))
        shared = _common_prefix(seqs, cap)
        parts = [(rows, shared)] if shared >= 1 else [([i], len(s) - len(requests[i][2])) for s, i in zip(seqs, rows)]
        for part, n in parts:
            if n < 1:  # a one-token context: nothing to cache
                stock.update(part)
                continue
            full = [(requests[i][1] + requests[i][2])[:-1] for i in part]
            groups.append(Group(part, full[0][:n], [s[n:] for s in full], [len(requests[i][2]) for i in part]))
    return groups, stock


def _common_prefix(seqs: list[list[int]], cap: int) -> int:
    """Length of the longest prefix every sequence shares, at most `cap`."""
    n = 0
    while n < cap and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def length_batches(groups: list[Group], budget: int) -> list[list[Group]]:
    """Groups sorted by prefix and suffix length, cut where the padded tokens would pass `budget`."""
    order = sorted(groups, key=lambda g: (-len(g.prefix), -max(map(len, g.suffixes))))
    batches: list[list[Group]] = []
    for g in order:
        if batches:
            trial = batches[-1] + [g]
            pre = max(len(x.prefix) for x in trial)
            suf = max(len(s) for x in trial for s in x.suffixes)
            if len(trial) * pre + sum(len(x.rows) for x in trial) * (pre + suf) <= budget:
                batches[-1] = trial
                continue
        batches.append([g])
    return batches


def fragile_rows(results: dict[int, Score], requests: list[Request], docs: list, tol: tuple[float, float]) -> set[int]:
    """Rows of items whose answer rounding could flip: a near greedy-token margin or, between two
    choices, a near gap of the raw or length-normalised log-likelihood (acc, acc_norm).

    acc_norm divides by the choice's characters; the choice is the continuation with or without its
    leading delimiter, so both are checked. A Score's `scale` bounds its rounding (see TOLERANCE).
    """
    by_doc = defaultdict(list)
    for i in results:
        by_doc[docs[i]].append(i)
    fragile = set()
    for rows in by_doc.values():
        weak = any(results[i].weak for i in rows)
        conts = [requests[i][0][1] for i in rows]
        norms = ([1] * len(rows), [max(len(c), 1) for c in conts], [max(len(c) - c[:1].isspace(), 1) for c in conts])
        for norm in norms if len(rows) > 1 else ():
            vals = [(results[i].ll / a, (tol[0] * results[i].scale + tol[1]) / a) for i, a in zip(rows, norm)]
            weak = weak or any(abs(x - y) <= ex + ey for k, (x, ex) in enumerate(vals) for y, ey in vals[k + 1:])
        if weak:
            fragile.update(rows)
    return fragile


class SharedPrefixLM(HFLM):
    """HFLM that scores each item's choices over one shared key/value cache (answers: HFLM's).

    `batch_tokens`: padded tokens per prefix batch (a quarter of it per suffix chunk); on 2 CPU cores
    2048 ran PIQA/HellaSwag/ARC-e 1.3x faster than 8192 (smaller logits tensors).
    """

    def __init__(self, *args, batch_tokens: int = 2048, tolerance: tuple[float, float] | None = None,
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
        for batch in length_batches(groups, self.batch_tokens):
            results.update({i: v for i, v in self._score_batch(batch, requests, tol).items() if i not in exact})
        fragile = fragile_rows(results, requests, docs, tol) - set(exact)
        redone = self._restore(requests, fragile)
        results.update({i: Score(*v) for i, v in redone.items()})
        self.last_scores = results
        self.stats["requests"] += len(requests)
        self.stats["stock"] += len(stock)
        self.stats["shared"] += len(requests) - len(stock)
        self.stats["near_tie_rows"] += len(fragile)
        self.stats["restored_rows"] += len(redone)
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
    def _score_batch(self, groups: list[Group], requests: list[Request], tol: tuple[float, float]) -> dict[int, Score]:
        """One forward of the groups' prefixes (left-padded, cached); their rows' suffixes then run on
        copies of that cache, sorted by length and cut into chunks so that little of them is padding."""
        dev, pre = self.device, max(len(g.prefix) for g in groups)
        ids = torch.zeros(len(groups), pre, dtype=torch.long)
        mask, pos = torch.zeros_like(ids), torch.zeros_like(ids)
        for b, g in enumerate(groups):
            n = len(g.prefix)
            ids[b, pre - n:], mask[b, pre - n:], pos[b, pre - n:] = torch.tensor(g.prefix), 1, torch.arange(n)
        with self._autocast():
            cache = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                               use_cache=True, logits_to_keep=1).cache
        rows = sorted(((b, k) for b, g in enumerate(groups) for k in range(len(g.rows))),
                      key=lambda bk: -len(groups[bk[0]].suffixes[bk[1]]))
        out: dict[int, Score] = {}
        while rows:
            longest = len(groups[rows[0][0]].suffixes[rows[0][1]])
            take = max(1, self.batch_tokens // (4 * longest))  # ~1/4 of the budget in suffix tokens
            chunk, rows = rows[:take], rows[take:]
            out.update(self._score_suffixes(groups, chunk, copy.deepcopy(cache), mask, requests, tol))
        return out

    def _score_suffixes(self, groups: list[Group], chunk: list[tuple[int, int]], cache, mask: torch.Tensor,
                        requests: list[Request], tol: tuple[float, float]) -> dict[int, Score]:
        """Rows (group b, choice k) continued from their group's cached prefix, right-padded."""
        dev = self.device
        owner = [b for b, _ in chunk]
        suffixes = [groups[b].suffixes[k] for b, k in chunk]
        suf = max(map(len, suffixes))
        s_ids, s_mask, s_pos = (torch.zeros(len(chunk), suf, dtype=torch.long) for _ in range(3))
        for r, (b, s) in enumerate(zip(owner, suffixes)):
            n = len(groups[b].prefix)
            s_ids[r, :len(s)], s_mask[r, :len(s)], s_pos[r, :len(s)] = torch.tensor(s), 1, torch.arange(n, n + len(s))
        cache.reorder_cache(torch.tensor(owner, device=dev))
        with self._autocast():
            logits = self.model(input_ids=s_ids.to(dev), attention_mask=torch.cat([mask[owner], s_mask], 1).to(dev),
                                position_ids=s_pos.to(dev), cache=cache, use_cache=True).logits
        rows = [groups[b].rows[k] for b, k in chunk]
        return self._read_scores(logits, rows, suffixes, [groups[b].scored[k] for b, k in chunk], requests, tol)

    def _read_scores(self, logits: torch.Tensor, rows: list[int], suffixes: list[list[int]], scored: list[int],
                     requests: list[Request], tol: tuple[float, float]) -> dict[int, Score]:
        """Each row's Score, read as HFLM reads it: log-softmax in `softmax_dtype`, the continuation
        tokens' log-probabilities summed; plus the rounding scale and greedy margins for near-ties."""
        at_row = torch.tensor([r for r, m in enumerate(scored) for _ in range(m)], device=logits.device)
        at_pos = torch.tensor([p for s, m in zip(suffixes, scored) for p in range(len(s) - m, len(s))],
                              device=logits.device)
        picked = logits[at_row, at_pos]
        lp = F.log_softmax(picked, dim=-1, dtype=self.softmax_dtype)
        target = torch.tensor([t for i in rows for t in requests[i][2]], device=lp.device)
        top = lp.topk(2, dim=-1)
        mine = lp.gather(1, target[:, None])[:, 0]
        size = picked.abs().amax(-1).float() + mine.abs().float()  # what a log-softmax entry is rounded against
        hit = top.indices[:, 0] == target
        margin = torch.where(hit, top.values[:, 0] - top.values[:, 1], top.values[:, 0] - mine).float()
        weak = margin <= 2 * (tol[0] * size + tol[1])
        out, start = {}, 0
        for i, m in zip(rows, scored):
            seg = slice(start, start + m)
            out[i] = Score(float(mine[seg].sum()), bool(hit[seg].all()), bool(weak[seg].any()), float(size[seg].sum()))
            start += m
        return out

    def _autocast(self):
        """HFLM's `_model_call` context: the same mixed precision, if any."""
        return torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                              enabled=self.mixed_precision_dtype is not None)
