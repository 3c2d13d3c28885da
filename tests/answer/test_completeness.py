"""answer.completeness: what a question asks for, and which part a verified answer leaves out."""

import pytest

from answer.completeness import asked_parts, enumeration, missing_parts


def missing(question: str, *sentences: str) -> list[str]:
    return [p.describe() for p in missing_parts(asked_parts(question), list(sentences))]


# (question, verified answer sentences, the parts named as missing)
LABELLED = [
    # one part: terse right answers are not flagged (the false alarms)
    ("Which optimizer is most commonly used?", ["AdamW is the most commonly used optimizer."], []),
    ("In BERT-style pretraining, what share of the input tokens gets masked out?", ["15% of tokens."], []),
    ("Is FUDGE a hard or soft constraint method?", ["FUDGE is a soft constraint method."], []),
    # two questions joined by "and"
    ("Which optimizer is most common, and what is it paired with?", ["AdamW is the most common optimizer."],
     ["what is it paired with"]),
    ("Which optimizer is most common, and what is it paired with?",
     ["AdamW is the most common optimizer.", "It is paired with weight decay."], []),
    ("What does the HELM benchmark stand for and what is it for?",           # nothing to check the 2nd part by
     ["HELM stands for Holistic Evaluation of Language Models."], []),
    ("Which copy of the weights is kept in full precision, and why?",
     ["The master weights are kept in FP32."], ["why"]),
    ("Which copy of the weights is kept in full precision, and why?",
     ["The master weights are kept in FP32 to prevent small updates from disappearing."], []),
    ("In prompt tuning, what exactly gets trained and what stays fixed?",   # said in other words, in its own clause
     ["Soft prompt embeddings are trained while the model weights remain frozen."], []),
    # the aspects of "how many X and Y"
    ("How many total and active parameters does Mixtral 8x7B have?", ["Mixtral has 46.7B total parameters."],
     ["active"]),
    ("How many total and active parameters does Mixtral 8x7B have?",
     ["Mixtral has 46.7B total parameters and activates 12.9B per token."], []),
    ("How do pre-training and fine-tuning compare in time, data and hardware?",
     ["Pre-training takes more time and data."], ["hardware"]),
    # a plural ask, a requested count
    ("What are the drawbacks of TensorRT-LLM?", ["TensorRT-LLM is CUDA-only, which can be a problem."],
     ["more than one of the drawbacks"]),
    ("What are the drawbacks of TensorRT-LLM?", ["TensorRT-LLM is CUDA-only, complex to set up and locks you in."], []),
    ("What biases should I watch out for?", ["Position bias, verbosity bias, and self-enhancement bias."], []),
    ("Which technique underlies 4-bit quantization?", ["NF4."], []),           # "underlies" is a verb, not a plural
    ("Name three parameter-efficient fine-tuning methods.", ["LoRA and prefix tuning."],
     ["3 or more parameter-efficient fine-tuning methods"]),
    ("Name three parameter-efficient fine-tuning methods.", ["LoRA, prefix tuning and adapters."], []),
]


@pytest.mark.parametrize("question,sentences,expected", LABELLED, ids=[f"{i}" for i in range(len(LABELLED))])
def test_the_rule_on_labelled_questions(question, sentences, expected):
    assert missing(question, *sentences) == expected


def test_the_asking_sentence_is_split_not_the_scene_before_it():
    parts = asked_parts("After fine-tuning on Python code, it can't hold a conversation and forgets English. "
                        "What happened and how do I avoid it?")
    assert [p.text for p in parts] == ["What happened", "how do I avoid it"]
    assert asked_parts("What is exposure bias?") == []


def test_enumeration_counts_list_entries_not_relative_clauses():
    assert enumeration("It includes position bias, verbosity bias, and self-enhancement bias [1].") == 3
    assert enumeration("TensorRT-LLM has CUDA-only support, which can be a disadvantage [1].") == 1
