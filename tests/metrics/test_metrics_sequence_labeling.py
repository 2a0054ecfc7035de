"""Entity-level P/R/F1 with conlleval/seqeval chunking."""

import pytest

from learnloop.metrics.sequence_labeling import bio_entities, entity_scores


def test_chunking_rules():
    assert bio_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert bio_entities(["I-PER", "I-PER", "O"]) == [("PER", 0, 1)]            # stray I- opens a chunk
    assert bio_entities(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    assert bio_entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
    assert bio_entities(["O", "O"]) == []


def test_seqeval_documented_example():
    # seqeval README: f1_score(y_true, y_pred) == 0.50, precision 0.50, recall 0.50
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    s = entity_scores(y_true, y_pred)
    assert (s["precision"], s["recall"], s["f1"]) == (0.5, 0.5, 0.5)
    assert s["per_type"]["PER"]["f1"] == 1.0 and s["per_type"]["MISC"]["f1"] == 0.0


def test_against_seqeval_when_installed():
    seqeval = pytest.importorskip("seqeval.metrics")
    import random

    rng = random.Random(0)
    tags = ["O", "O", "O", "B-A", "I-A", "B-B", "I-B"]
    true = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in s] for s in true]
    s = entity_scores(true, pred)
    assert s["f1"] == pytest.approx(seqeval.f1_score(true, pred))
    assert s["precision"] == pytest.approx(seqeval.precision_score(true, pred))


def test_bad_input():
    with pytest.raises(ValueError, match="BIO"):
        bio_entities(["X-PER"])
    with pytest.raises(ValueError, match="tags"):
        entity_scores([["O"]], [["O", "O"]])
