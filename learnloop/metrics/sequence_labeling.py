"""Entity-level precision, recall and F1 for BIO-tagged sequences, with the chunking rules of CoNLL's
`conlleval` script (Tjong Kim Sang & Buchholz, 2000) that `seqeval`'s default mode uses.

An entity is a maximal chunk (type, start, end). A chunk starts at B-X, and also at I-X that follows O or
a tag of another type (lenient: a stray I- opens a chunk); it ends before O, B-, or a tag of another type.
With TP = predicted chunks that match a true chunk exactly (same type, start and end):
    precision = TP / #predicted,   recall = TP / #true,   F1 = 2 P R / (P + R)          (micro average)
Per-type scores use the same formulas restricted to one type.
"""

from __future__ import annotations

from collections.abc import Sequence


def _split(tag: str) -> tuple[str, str]:
    if tag in ("O", "", None):
        return "O", ""
    prefix, _, kind = tag.partition("-")
    if prefix not in ("B", "I") or not kind:
        raise ValueError(f"not a BIO tag: '{tag}' (expected O, B-<type> or I-<type>)")
    return prefix, kind


def bio_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """[(type, start, end_inclusive), ...] for one sequence of BIO tags."""
    chunks, start, kind = [], None, ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = _split(tag)
        ends = start is not None and (prefix in ("O", "B") or t != kind)
        if ends:
            chunks.append((kind, start, i - 1))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, t
    return chunks


def _prf(tp: int, n_pred: int, n_true: int) -> dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_true if n_true else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "support": n_true}


def entity_scores(true: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """Micro precision/recall/F1 over all sequences, plus `per_type` {type: {precision, recall, f1, support}}."""
    if len(true) != len(pred):
        raise ValueError(f"{len(true)} true sequences but {len(pred)} predicted")
    t_set, p_set = set(), set()
    for n, (ts, ps) in enumerate(zip(true, pred)):
        if len(ts) != len(ps):
            raise ValueError(f"sequence {n}: {len(ts)} true tags but {len(ps)} predicted")
        t_set.update((n, *e) for e in bio_entities(ts))
        p_set.update((n, *e) for e in bio_entities(ps))
    out = _prf(len(t_set & p_set), len(p_set), len(t_set))
    types = sorted({e[1] for e in t_set | p_set})
    out["per_type"] = {k: _prf(len({e for e in t_set & p_set if e[1] == k}), sum(e[1] == k for e in p_set),
                               sum(e[1] == k for e in t_set)) for k in types}
    return out
