"""The verifier: a sentence is verified only by one aligned span that states the same numbers, names and sides."""

from __future__ import annotations

import pytest

from answer.verify import (CONTRADICTED, TOO_SHORT, UNVERIFIED, VERIFIED, align, names, number_key, numbers,
                           proper_nouns)

MOE = ("Replace the dense FFN in each Transformer layer with N expert FFNs and a learned router. Each token is routed "
       "to the top-k experts (typically 2 of 8). Mixtral 8×7B has 46.7B total but only activates 12.9B per token. "
       "Main challenge: router collapse.")
CONSTRAINTS = """| Method | Type | Flexibility | Speed | Implementation Complexity |
|--------|------|-------------|-------|-------------------------|
| **Templatic** | Hard constraints | Low | Fast | Medium |
| **Sample-then-Rank** | Soft constraints | High | Slow | Low |
| **FUDGE** | Soft constraints | High | Medium | High |"""
QUANT = """| Method | Precision | Techniques | Memory Reduction | Performance Impact | Use Case |
|--------|-----------|------------|------------------|-------------------|----------|
| **INT8** | 8-bit | Post-training quantization | 75% | Small | Inference optimization |
| **INT4** | 4-bit | Advanced techniques (NF4) | 87.5% | Moderate | Memory-constrained inference |"""
COT = ('Q: "What is the capital of Australia?"\nCoT: "Australia is a large country. Its largest and most famous city '
       'is Sydney. Therefore the capital is Sydney."\nA: "Sydney"   ← Wrong. The capital is Canberra.')


@pytest.mark.parametrize("sentence, passage, status, reason", [
    # the examples: a wrong figure, side or method next to the passage's own words
    ("Mixtral 8x7B has 46.7B total parameters and 8 active parameters.", MOE, CONTRADICTED,
     "the passage says 12.9B, not 8"),
    ("FUDGE is a hard constraint method.", CONSTRAINTS, CONTRADICTED, "the passage says soft, not hard"),
    ("The technique underlying 4-bit quantization is INT4.", QUANT, CONTRADICTED,
     "the passage's Techniques column says Advanced techniques (NF4)"),
    ("INT4 reduces memory by 75%.", QUANT, CONTRADICTED, "the passage's Memory Reduction column says 87.5%"),
    ("QLoRA fine-tunes a 70B model on one GPU.", "QLoRA fine-tunes a 65B model on one 48GB GPU.", CONTRADICTED,
     "the passage says 65B, not 70B"),
])
def test_contradictions_are_caught_and_named(sentence, passage, status, reason):
    a = align(sentence, passage)
    assert a.status == status and reason in a.reasons, (a.status, a.reasons)
    assert not a.verified and a.aligned          # about the passage, but wrong


@pytest.mark.parametrize("sentence, passage", [
    ("Mixtral 8x7B has 46.7B total parameters and activates 12.9B per token.", MOE),
    ("Mixtral has 46.7 billion total parameters and 12.9 billion active per token.", MOE),
    ("Each token is routed to 2 of 8 experts.", MOE),
    ("FUDGE is a soft constraint method.", CONSTRAINTS),
    ("4-bit quantization uses advanced techniques such as NF4.", QUANT),
    ("INT4 uses 4-bit precision and reduces memory by 87.5%.", QUANT),
    ("INT8 gives 75% memory reduction with small performance impact.", QUANT),   # the header names the columns
    ("The capital of Australia is Canberra.", COT),
])
def test_right_sentences_verify(sentence, passage):
    a = align(sentence, passage)
    assert a.status == VERIFIED, a.reasons
    assert a.span_end > a.span_start and passage[a.span_start:a.span_end].strip()


PTQ = ("Post-Training Quantization (PTQ): Quantize after training (no retraining). Methods:\n\n"
       "  • GPTQ: Layer-by-layer quantization minimizing reconstruction error\n"
       "  • AWQ (Activation-aware): Identify and protect important weights (salient activations)\n"
       "  • GGUF (llama.cpp): CPU-friendly quantization format")


def test_a_sentence_across_two_items_names_both_and_the_parent_label_is_not_its_subject():
    """Tune answer a19: each method with its own line verifies; it was 'the passage says this of PTQ, not AWQ'."""
    both = align("GPTQ quantizes layer-by-layer, while AWQ identifies and protects important weights.", PTQ)
    assert both.status == VERIFIED, both.reasons
    swapped = align("GPTQ identifies and protects important weights (salient activations).", PTQ)
    assert swapped.status == CONTRADICTED and not swapped.verified, swapped.reasons
    crossed = align("AWQ minimizes reconstruction error layer by layer, while GPTQ protects salient weights.", PTQ)
    assert crossed.status == CONTRADICTED and "the passage says this of GPTQ, not AWQ" in crossed.reasons


def test_crossed_items_are_read_on_list_items_only():
    """Prose names many things per line ('RLHF', 'KL'): a clause is not tied to the line that names it."""
    from answer.verify import _crossed_items
    s = "AWQ minimizes reconstruction error, while GPTQ protects salient weights."
    s_names = {"awq": "AWQ", "gptq": "GPTQ"}
    assert _crossed_items(s, s_names, PTQ)[0] == ["GPTQ"]
    prose = PTQ.replace("  • ", "")
    assert _crossed_items(s, s_names, prose) == ([], [])


def test_scattered_words_do_not_verify():
    passage = ("Attention weights tokens. " + "Filler sentence about something else entirely here. " * 6
               + "Caching stores keys. " + "More unrelated filler text goes on and on. " * 6 + "Values are reused.")
    a = align("Attention caching reuses values.", passage)
    assert a.status == UNVERIFIED and a.score < 0.6


def test_a_heading_alone_never_verifies():
    a = align("Rotary embeddings rotate queries and keys.", "It is used by most open models today.",
              header="Guide › Rotary embeddings rotate queries and keys")
    assert a.status == UNVERIFIED


def test_missing_term_without_an_alternative_is_named():
    a = align("LoRA trains low-rank adapters with AdamW.", "LoRA trains low-rank adapters while the base stays frozen.")
    assert a.status == UNVERIFIED and "AdamW is not in the passage" in a.reasons


def test_short_sentences_are_too_short_to_check_not_unsupported():
    a = align("NF4.", QUANT)
    assert a.status == TOO_SHORT and a.reasons == ["too short to check"]


def test_terms_are_read_as_whole_tokens_with_units():
    assert number_key("12.9 billion") == number_key("12.9B") == "12.9b"
    assert number_key("4-bit") == "4bit" and number_key("1,000") == "1000"
    assert set(numbers("Mixtral 8×7B routes to 2 of 8")) == {"8x7b", "2", "8"}
    assert "8" not in numbers("Mixtral 8x7B")                     # '8' is not '8x7B'
    assert set(names("NF4 and INT4 with LoRA, QLoRA, GPT-4 and FUDGE")) == {"nf4", "int4", "lora", "qlora", "gpt4",
                                                                           "fudge"}
    assert set(proper_nouns("The capital of Australia is Canberra.")) == {"australia", "canberra"}


def test_a_sentence_copied_from_the_passage_verifies_even_with_characters_nfkc_rewrites():
    """'…' becomes '...' under NFKC: term offsets must stay in step with the text they index."""
    passage = ("**Q15: What is LoRA?**\n- **Problem:** Full fine-tuning updates all parameters (e.g., 7B or 175B), "
               "which is computationally expensive.\n- **Benefit:** Reduces trainable parameters by 10,000x.")
    sentence = ("**Q15: What is LoRA?** … - **Problem:** Full fine-tuning updates all parameters (e.g., 7B or 175B), "
                "which is computationally expensive.")
    assert align(sentence, passage).status == VERIFIED


def test_a_thousands_comma_before_a_unit_is_one_number():
    from answer.verify import number_key

    assert number_key("10,000x") == "10000x" == number_key("10000x") and number_key("1,000") == "1000"
    assert number_key("1,2345") == "1,2345"                     # not a thousands separator


def test_a_word_inside_a_list_item_is_not_the_items_name():
    """Issue 21: 'GPU' in the Benefit item does not make LoRA's benefit someone else's."""
    passage = ("**Q15: What is LoRA (Low-Rank Adaptation)?**\n\n**Expected Answer:**\n"
               "- **Problem:** Full fine-tuning updates all parameters.\n"
               "- **LoRA Solution:** Freezes the pre-trained weights and injects trainable rank decomposition matrices.\n"
               "- **Benefit:** Reduces the number of trainable parameters by 10,000x and GPU memory requirement by 3x.")
    assert align("LoRA cuts trainable parameters by 10,000x and GPU memory requirement by 3x.", passage).verified
    wrong = align("LoRA cuts trainable parameters by 100x and GPU memory requirement by 3x.", passage)
    assert wrong.status == CONTRADICTED and wrong.reasons == ["the passage says 10,000x, not 100x"]


def test_a_reason_that_names_what_the_passage_says_instead_keeps_its_parts():
    """The practice grader reads these parts; the app and the CLI show the sentence."""
    from answer.verify import Swap

    a = align("LoRA cuts trainable parameters by 100x.", "LoRA reduces trainable parameters by 10,000x and memory by 3x.")
    (r,) = [r for r in a.reasons if isinstance(r, Swap)]
    assert r == "the passage says 10,000x / 3x, not 100x" and r.alternatives == ("10,000x", "3x") and r.said == "100x"
