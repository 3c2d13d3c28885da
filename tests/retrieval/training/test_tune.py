"""Choosing K, fusion and weight on the tune part (grid, choice, cross-validation), and the default rule."""

from __future__ import annotations

import json

import pytest

from retrieval.training import tune as T

# Three questions, hybrid order a, b, c, d; the reranker likes c best for every question.
QS = [
    T.Question("q1", ["a", "b", "c", "d"], [0.1, 0.2, 0.9, 0.0], frozenset({"c"})),   # the reranker fixes it
    T.Question("q2", ["a", "b", "c", "d"], [0.5, 0.2, 0.9, 0.0], frozenset({"a"})),   # the reranker breaks it
    T.Question("q3", ["a", "b", "c", "d"], [0.1, 0.8, 0.9, 0.0], frozenset({"b"})),   # nothing relevant first either way
]


def test_reorder_fixed_example():
    q = QS[0]
    assert T.reorder(q, T.Variant(4, "weight", 0.0)) == ["a", "b", "c", "d"]            # the hybrid order
    assert T.reorder(q, T.Variant(4, "weight", 1.0)) == ["c", "b", "a", "d"]            # the reranker's
    # w=0.5: a 0.5*0.111+0.5=0.556, b 0.5*0.222+0.25=0.361, c 0.5+0.167=0.667, d 0+0.125
    assert T.reorder(q, T.Variant(4, "weight", 0.5)) == ["c", "a", "b", "d"]
    assert T.reorder(q, T.Variant(2, "weight", 1.0)) == ["b", "a", "c", "d"]            # only the top 2 move
    # rrf, w=0.5: ranks (hybrid, reranker) a (1,3) b (2,2) c (3,1) d (4,4): 1/61+1/63 > 2/62, so a and c (a tie,
    # kept in hybrid order) before b
    assert T.reorder(q, T.Variant(4, "rrf", 0.5)) == ["a", "c", "b", "d"]
    assert T.reorder(q, T.Variant(4, "rrf", 0.7)) == ["c", "b", "a", "d"]
    with pytest.raises(ValueError, match="score deeper"):
        T.reorder(q, T.Variant(5, "weight", 0.5))


def test_metrics_and_wins_against_the_hybrid_order():
    hy = T.metrics(QS, None)
    assert hy == {"n": 3, "hit@1": round(1 / 3, 4), "hit@5": 1.0, "mrr@10": round((1 / 3 + 1 + 1 / 2) / 3, 4),
                  "won": 0, "lost": 0}
    alone = T.metrics(QS, T.Variant(4, "weight", 1.0))
    # q1: c, b, a (c first: won), q2: c, a, b (a second: lost), q3: c, b, a (b second: tied)
    assert alone["hit@1"] == round(1 / 3, 4) and (alone["won"], alone["lost"]) == (1, 1)
    assert alone["mrr@10"] == round((1 + 1 / 2 + 1 / 2) / 3, 4)


def test_choose_prefers_hit1_then_mrr_then_smaller_k_then_lower_weight():
    m = lambda h, r: {"hit@1": h, "mrr@10": r}  # noqa: E731
    a, b = T.Variant(20, "weight", 0.5), T.Variant(10, "weight", 0.5)
    c, d = T.Variant(10, "weight", 0.3), T.Variant(30, "rrf", 0.9)
    assert T.choose([(a, m(0.7, 0.8)), (d, m(0.71, 0.5))]) == d
    assert T.choose([(a, m(0.7, 0.8)), (d, m(0.7, 0.81))]) == d
    assert T.choose([(a, m(0.7, 0.8)), (b, m(0.7, 0.8))]) == b
    assert T.choose([(b, m(0.7, 0.8)), (c, m(0.7, 0.8))]) == c


def test_cross_validation_chooses_without_the_held_out_fold():
    qs = [T.Question(f"q{i}", ["a", "b"], [0.0, 1.0], frozenset({"b"})) for i in range(10)]   # the reranker is right
    vs = T.variants([2], ["weight"], [0.0, 1.0])
    folds = list(T.folds_of(qs + [T.Question("x", ["a"], [0.0], frozenset())], 5).values())
    sizes = sorted(folds.count(f) for f in range(5))
    assert sizes == [2, 2, 2, 2, 3]                                      # balanced folds
    cv = T.cross_validate(qs, vs, folds=5)
    assert cv["pooled"]["hit@1"] == 1.0 and cv["pooled"]["won"] == 10 and cv["pooled"]["n"] == 10
    assert all(f["variant"] == "K=2, weight, w=1" for f in cv["folds"])
    # the reranker is right on half and wrong on the other half: no choice made on some folds can be perfect
    mixed = qs[:5] + [T.Question(f"p{i}", ["a", "b"], [0.0, 1.0], frozenset({"a"})) for i in range(5)]
    assert T.cross_validate(mixed, vs, folds=5)["pooled"]["hit@1"] < 1.0


def test_percentiles():
    assert T.percentiles([5, 1, 3, 2, 4]) == {"n": 5, "p50": 3, "p95": 5}
    assert T.percentiles([]) == {"n": 0}


# --------------------------------------------------------------------------- the default rule


@pytest.mark.parametrize("hit1,mrr,met", [
    (0.768, 0.808, True),      # +0.03 hit@1, MRR@10 unchanged
    (0.800, 0.900, True),
    (0.767, 0.900, False),     # +0.029
    (0.800, 0.807, False),     # MRR@10 falls
    (0.662, 0.758, False),     # issue 12's trained model
])
def test_default_rule(hit1, mrr, met):
    r = T.default_rule({"hit@1": 0.738, "mrr@10": 0.808}, {"hit@1": hit1, "mrr@10": mrr})
    assert r["met"] is met and (r["missed_by"] == "") is met


def test_default_rule_says_by_how_much_it_missed():
    r = T.default_rule({"hit@1": 0.738, "mrr@10": 0.808}, {"hit@1": 0.754, "mrr@10": 0.800})
    assert r["hit@1_gain"] == pytest.approx(0.016) and r["mrr@10_change"] == pytest.approx(-0.008)
    assert "0.014 short" in r["missed_by"] and "MRR@10 -0.008" in r["missed_by"]


def test_the_default_reranker_follows_the_recorded_test_result():
    """The settings' default is 'trained' exactly when the recorded test-part figures meet the rule."""
    from core.settings import Settings
    from retrieval.trained import DATA_DIR

    rec = json.loads((DATA_DIR / "rerank_decision.json").read_text())
    r = T.default_rule(rec["test"]["hybrid"], rec["test"]["trained"])
    assert r["met"] == rec["rule"]["met"]
    assert Settings.model_fields["reranker"].default == ("trained" if r["met"] else "off")
