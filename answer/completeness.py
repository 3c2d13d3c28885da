"""What a question asks for, and which of it a verified answer leaves out.

"May be incomplete" used to fire when the answer stated little of the best evidence's words, and most
answers it fired on were right: "AdamW is the most commonly used optimizer" for "Which optimizer is most
commonly used?" leaves out words of the evidence that nobody asked about. The warning now fires when the
answer leaves out a part of the *question*:

- a second question joined by "and" ("What does HELM stand for **and what is it for**?"): the part is
  answered when a verified sentence holds one of the part's own content words (words the other parts
  share do not count) or, for a part with none ("and why?"), the cue its question word expects
  ("because", "by", ...). A part with nothing to check by is taken as answered: the rule names only what
  it can see;
- the aspects of "how many/much X and Y", "compare/differ in X, Y and Z": each must be named;
- a plural ask ("What tricks ...", "What are the drawbacks ...") wants at least two items, a requested
  count ("Name three ...") that many. Items are the verified sentences, or the entries of the longest
  enumeration in one of them, whichever is more.

Example::

    parts = asked_parts("What does HELM stand for and what is it used for?")
    [p.text for p in parts]             # ['What does HELM stand for', 'what is it used for']
    missing_parts(parts, ["HELM stands for Holistic Evaluation of Language Models."])
    # [Part(kind='clause', text='what is it used for', ...)]

Chosen on the tune part of the dev set, reported on the test part (answer/MEASUREMENTS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.text import QUESTION_SCAFFOLD_STEMS, content_stems

WH = r"(?:what|which|why|how|when|where|who|whom|whose|is|are|was|were|does|do|did|can|could|should|would|will|has|have)"
_CLAUSE_SPLIT = re.compile(rf"\s*,?\s+and\s+(?={WH}\b)", re.I)
_ASPECTS = re.compile(r"\b(?:how (?:many|much)|(?:compare|differ|vary)s?\s+(?:in|on|by|for))\s+(?P<list>[\w\- ]+?(?:,\s*[\w\- ]+?)*,?\s+and\s+[\w\-]+)",
                      re.I)
_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "2": 2, "3": 3, "4": 4,
            "5": 5, "6": 6, "7": 7, "8": 8}
_COUNT = re.compile(r"\b(?:name|list|give|what are(?: the)?|which are(?: the)?)\s+(?P<n>two|three|four|five|six|seven|eight|[2-8])\b", re.I)
_PLURAL_ASK = re.compile(
    r"^\W*(?:(?:what|which)\s+(?:are|were)\s+(?:the\s+)?(?:[\w\-]+\s+)?(?P<noun>[a-z][\w\-]*[^s\W]s)\b"
    r"|(?:what|which)\s+(?:other\s+|main\s+|key\s+|common\s+|kinds?\s+of\s+|types?\s+of\s+)*(?:[\w\-]+\s+)?"
    r"(?P<noun2>[a-z][\w\-]*[^s\W]s)\s+(?:do|does|did|are|were|should|can|could|have|has|would|will|of|in|for|to|that)\b)",
    re.I)
_NOT_PLURAL = {"does", "is", "was", "has", "this", "its", "his", "less", "process", "loss", "bias", "class", "focus",
               "gpus", "status", "analysis", "basis", "corpus", "always", "us", "yes", "thus", "plus", "across"}
_CUES = {
    "why": {"because", "since", "due", "so", "as", "allow", "enabl", "help", "reduc", "improv", "prevent", "avoid",
            "lead", "caus", "make", "mak", "lets", "let", "without", "instead", "keep", "ensur", "stabl", "faster"},
    "how": {"by", "using", "use", "through", "via", "with", "uses", "used"},
}
_RELATIVE = re.compile(r"^(?:which|that|who|where|when|while|because|as|so|but|making|allowing|thus|since)\b", re.I)


@dataclass
class Part:
    """One thing the question asks for."""
    kind: str                 # "clause" | "aspect" | "items"
    text: str                 # in the question's words
    words: frozenset = field(default_factory=frozenset)   # content stems that mark it answered
    wh: str = ""              # the clause's question word (for cues)
    count: int = 0            # "items": how many the question asks for

    def describe(self) -> str:
        if self.kind == "items":
            return f"{self.count} or more {self.text}" if self.count > 2 else f"more than one of the {self.text}"
        return self.text


def _last_sentence(question: str) -> str:
    """The asking sentence of a question that first sets a scene ("After fine-tuning ... What happened?")."""
    parts = [p for p in re.split(r"(?<=[.!?])\s+(?=[A-Z])", question.strip()) if p.strip()]
    asking = [p for p in parts if p.rstrip().endswith("?")]
    return (asking[-1] if asking else parts[-1] if parts else question).strip()


def asked_parts(question: str) -> list[Part]:
    """The parts the question asks for; one clause (no part list) when it asks for one thing."""
    q = _last_sentence(question).rstrip(" ?")
    clauses = [c.strip() for c in _CLAUSE_SPLIT.split(q) if c.strip()]
    out: list[Part] = []
    if len(clauses) > 1:
        stems = [set(content_stems(c)) - QUESTION_SCAFFOLD_STEMS for c in clauses]
        for i, c in enumerate(clauses):
            others = set().union(*(s for j, s in enumerate(stems) if j != i))
            wh = c.split()[0].lower() if c.split() else ""
            out.append(Part("clause", c, frozenset(stems[i] - others), wh=wh))
    for c in clauses:
        m = _ASPECTS.search(c)
        if m:
            names = [a.strip() for a in re.split(r",\s*|\s+and\s+", m.group("list")) if a.strip()]
            # "how many total and active parameters": the shared noun after the last name is not a name
            if len(names) >= 2:
                for a in names:
                    w = set(content_stems(a)) - QUESTION_SCAFFOLD_STEMS
                    if w:
                        out.append(Part("aspect", a, frozenset(w)))
        m = _COUNT.search(c)
        if m:
            rest = re.split(r"\s+(?:that|which|of|in|for|to|used|you|we|from)\b", c[m.end():].strip(" .?!"))[0].split()
            out.append(Part("items", " ".join(rest[:4]) or "items", count=_NUMBERS[m.group("n").lower()]))
            continue
        m = _PLURAL_ASK.match(c)
        noun = m and (m.group("noun") or m.group("noun2"))
        if noun and noun.lower() not in _NOT_PLURAL:
            out.append(Part("items", noun, count=2))
    return out


def enumeration(sentence: str) -> int:
    """Entries of the longest list in one sentence: "include A, B, and C" -> 3; a relative clause is not one."""
    body = re.sub(r"\[\d+\]", "", sentence)
    segs = [s.strip() for s in re.split(r",\s*(?:and\s+|or\s+)?|\s+and\s+|\s+or\s+|;\s*", body) if s.strip()]
    return max(1, sum(1 for s in segs if not _RELATIVE.match(s)))


def segments(sentences: list[str]) -> int:
    """Clauses that can each answer one part: sentences, split again at "while", ";" and ", but"."""
    return sum(len(re.split(r"\s+while\s+|;\s*|,\s+(?:but|whereas|and)\s+", s)) for s in sentences)


def part_answered(part: Part, verified: list[str]) -> bool:
    if part.kind == "items":
        items = max([len(verified)] + [enumeration(s) for s in verified]) if verified else 0
        return items >= part.count
    stems = [set(content_stems(s)) for s in verified]
    if part.words:
        return any(part.words & st for st in stems)
    cues = _CUES.get(part.wh)
    if cues is None:
        return True                        # nothing to check it by: not named as missing
    return any(cues & {w.lower() for w in re.findall(r"[A-Za-z]+", s)} or
               any(c in s.lower() for c in cues if len(c) > 4) for s in verified)


def missing_parts(parts: list[Part], verified: list[str]) -> list[Part]:
    """The parts no verified sentence answers (``part_answered``). A clause whose words the answer does not
    use still counts as answered when the answer has a clause for each asked one (it may say it in other
    words: "the model weights remain frozen" for "what stays fixed")."""
    missing = [p for p in parts if not part_answered(p, verified)]
    clauses = [p for p in parts if p.kind == "clause"]
    if clauses and segments(verified) >= len(clauses):
        missing = [p for p in missing if p.kind != "clause"]
    return missing
