"""Sentence splitting, marker handling, attribution and verification of citations."""

from __future__ import annotations

import pytest

from answer.citations import SupportScorer, attribute, parse_markers, place_markers, split_sentences, strip_markers
from answer.prompt import arrange


@pytest.fixture
def passages(hits):
    return arrange(hits, "rank")       # [1] lora, [2] qlora, [3] bpe, [4] rope


def test_split_sentences_keeps_decimals_abbreviations_and_trailing_markers():
    segs = split_sentences("Mixtral has 46.7B params, e.g. eight experts. [1] It uses 12.9B per token [2].\n- a bullet")
    assert [s.text for s in segs] == ["Mixtral has 46.7B params, e.g. eight experts. [1]",
                                      "It uses 12.9B per token [2].", "- a bullet"]
    assert "".join(s.text + s.sep for s in segs).startswith("Mixtral")


def test_split_sentences_keeps_line_breaks_as_separators():
    segs = split_sentences("\nLoRA merges. It adds nothing.\n  \n- a bullet")
    assert [(s.text, s.sep) for s in segs] == [("", "\n"), ("LoRA merges.", " "), ("It adds nothing.", "\n\n"),
                                               ("- a bullet", "")]


def test_marker_parsing_and_placement():
    assert parse_markers("a [1, 3] b [2][3]") == [1, 3, 2]
    assert strip_markers("It adds [1] no latency [2].") == "It adds no latency."
    assert place_markers("It adds no latency.", [1, 2]) == "It adds no latency [1][2]."
    assert place_markers("No final stop", [3]) == "No final stop [3]"


def test_unmarked_sentence_gets_best_supporting_passage(passages):
    out = attribute("At inference the LoRA update is merged into the weights, so there is no latency overhead.",
                    passages)
    assert out.text.endswith("overhead [1].")
    (c,) = out.citations
    assert (c.n, c.chunk_id, c.verified) == (1, "lora", True)
    s = c.supports[0]
    assert s.source == "attributed" and s.score >= 0.8
    assert passages[0].hit.text[s.span_start:s.span_end] == s.span
    assert "merged into the weights" in s.span            # the passage sentence to highlight


def test_invalid_marker_is_removed_and_sentence_reattributed(passages):
    out = attribute("Byte pair encoding merges the most frequent pair into a new token [9].", passages)
    assert out.removed_markers == [9]
    assert "[9]" not in out.text and out.text.endswith("token [3].")
    assert out.citations[0].chunk_id == "bpe" and out.citations[0].supports[0].source == "attributed"


def test_model_marker_kept_but_unverified_when_passage_does_not_support(passages):
    out = attribute("Byte pair encoding merges the most frequent pair of symbols [4].", passages)
    by_n = {c.n: c for c in out.citations}
    assert by_n[4].chunk_id == "rope" and by_n[4].supports[0].source == "model"
    assert by_n[4].verified is False and by_n[4].supports[0].score < 0.5
    # the passage that does support it is attached as well, and verified
    assert by_n[3].chunk_id == "bpe" and by_n[3].verified and by_n[3].supports[0].source == "attributed"
    assert out.text.endswith("symbols [4][3].")


def test_a_right_sentence_cited_to_a_passage_that_names_other_terms_also_gets_the_passage_that_states_it(make_hit):
    """Measured on tune (n057): "4-bit ... NF4 [3]" cited to a passage about 32-bit and 8-bit was "contradicted"
    though passage [1] states it."""
    int8 = make_hit("In the quantization table, the INT8 row quantizes the frozen base model weights to 8-bit integers.",
                    chunk_id="int8", rank=1)
    qlora = make_hit("QLoRA quantizes the frozen base model weights to 4-bit NF4 and trains LoRA adapters on top.",
                     chunk_id="qlora", rank=2)
    out = attribute("QLoRA quantizes the frozen base model weights to 4-bit NF4 [1].", arrange([int8, qlora], "rank"))
    assert out.text.endswith("NF4 [1][2].") and out.status == "verified"
    (cited, _), (stating, _) = [(c.supports[0], c) for c in out.citations]
    assert cited.source == "model" and cited.status == "contradicted"           # the model's passage, and why
    assert "the passage says INT8 / 8-bit, not NF4" in cited.reasons
    assert stating.source == "attributed" and stating.status == "verified"


def test_unsupported_model_marker_alone_stays_unverified(passages):
    out = attribute("The 48GB GPU was invented by a hardware startup in Finland [2].", passages)
    (c,) = out.citations
    assert (c.n, c.verified, c.supports[0].source) == (2, False, "model")


def test_valid_model_marker_that_supports_is_verified(passages):
    out = attribute("QLoRA fine-tunes a 65B model on one 48GB GPU [2].", passages)
    assert out.citations[0].n == 2 and out.citations[0].verified
    assert out.text == "QLoRA fine-tunes a 65B model on one 48GB GPU [2]."


def test_unsupported_sentence_gets_no_citation(passages):
    out = attribute("Dijkstra's algorithm runs in logarithmic heap time per vertex.", passages)
    assert out.citations == [] and out.uncited_sentences and out.n_verified == 0
    assert "[" not in out.text


def test_short_filler_and_skipped_sentences_are_not_cited(passages):
    out = attribute("Sure! Rotary embeddings rotate query and key vectors by position. The guides do not cover this.",
                    passages, skip=("The guides do not cover this.",))
    assert out.text == "Sure! Rotary embeddings rotate query and key vectors by position [4]. The guides do not cover this."
    assert [c.n for c in out.citations] == [4]


def test_several_sentences_share_one_citation(passages):
    out = attribute("LoRA trains two low-rank matrices. The LoRA update is merged into the pretrained weights.",
                    passages)
    assert len(out.citations) == 1 and len(out.citations[0].sentences) == 2


def test_threshold_controls_verification(passages):
    text = "LoRA trains low-rank matrices for quantized vocabulary tokens."
    strict = attribute(text, passages, threshold=0.95)
    loose = attribute(text, passages, threshold=0.1)
    assert not strict.citations[0].verified and loose.citations[0].verified


def test_empty_answer_and_no_passages():
    assert attribute("", []).citations == []
    out = attribute("LoRA trains low-rank matrices.", [])
    assert out.citations == [] and out.uncited_sentences == ["LoRA trains low-rank matrices."]


def test_embedding_modes_need_an_embedder(passages, embedder):
    with pytest.raises(ValueError, match="embedder"):
        SupportScorer(passages, mode="blend")
    with pytest.raises(ValueError, match="Supported modes"):
        SupportScorer(passages, mode="magic")
    out = attribute("Rotary embeddings rotate query and key vectors.", passages, embedder=embedder, mode="blend")
    assert out.citations[0].chunk_id == "rope"


def test_echoed_passage_headers_are_dropped(passages):
    from answer.citations import strip_echoed_headers

    raw = "[1] Guide › LoRA\nLoRA trains low-rank matrices [1].\n**Guide › BPE**"
    assert strip_echoed_headers(raw, passages) == "LoRA trains low-rank matrices [1]."
    assert strip_echoed_headers("Guide › LoRA is covered.", passages) == "Guide › LoRA is covered."


def test_a_changed_number_is_not_verified_even_with_the_passages_words(passages):
    """The 0.5B model copies a passage's words but changes its figures; word overlap alone would verify that."""
    right = attribute("QLoRA fine-tunes a 65B model on one 48GB GPU.", passages)
    (c,) = right.citations
    assert c.chunk_id == "qlora" and c.verified and c.supports[0].reasons == []
    wrong = attribute("QLoRA fine-tunes a 70B model on one 24GB GPU.", passages)
    (c,) = wrong.citations
    s = c.supports[0]
    assert c.chunk_id == "qlora" and s.score >= 0.5          # the words match ...
    assert not c.verified and s.status == "contradicted"     # ... the figures do not, and the passage's are named
    assert s.reasons == ["the passage says 65B, not 70B", "the passage says 48GB, not 24GB"]
    assert c.to_json()["supports"][0]["status"] == "contradicted"


def test_numbers_are_read_loosely():
    from answer.citations import numbers

    assert numbers("FP16 uses 2 bytes; 7B * 2 = **14 GB**, 87.5% less, 1,000 tokens.") == {
        "fp16", "2", "7b", "14gb", "87.5%", "1000"}
    assert numbers("12.9 billion, 12.9B and Mixtral 8×7B") == {"12.9b", "8x7b"}   # whole tokens with units
    assert numbers("No figures here.") == set()
