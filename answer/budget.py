"""The evidence budget sized to the machine: how many tokens of the guides the model reads per answer.

The first token waits for the model to read the prompt's new part (the system prompt stays in the server's
prompt cache): the question, the passage headers and the evidence sentences. On 2 CPU cores the bundled
1.5B reads about 36 tokens a second, so 200 tokens of evidence already cost seconds; a laptop with more cores
or a GPU server reads several times faster, and the same wait buys much more evidence.

So the budget is measured, not fixed (``answer_context_budget="auto"``, the default):

- ``measure_prefill`` times one 1-token completion of a fresh (uncached) prompt of about 160 tokens: prompt
  tokens over wall seconds, which slightly under-rates the speed (the one generated token and the round trip
  count too), so the budget errs small;
- ``size_budget``: tokens = speed × ``answer_first_token_s`` − ``OVERHEAD_TOKENS`` (question and headers),
  never below ``answer_context_tokens`` (today's 200, the floor on a slow machine) and never above what the
  context window leaves.

The speed is remembered for a week per model and machine (``<data_dir>/logs/reading_speed.json``), so a
one-shot ``guides ask`` does not pay for the probe each time; delete the file to measure again.
``answer_context_budget="fixed"`` reads ``answer_context_tokens`` and measures nothing. A model with no
measurable speed (the deterministic fake without a simulated speed) also gets the fixed budget, and says so.

Example::

    b = size_budget(36.0, target_s=3.0, floor=200, cap=3000)
    print(b.tokens, b.why)          # 200, "measured 36 tokens/s × 3 s − 80 = 28, below the floor 200 (...)"
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.llm import LLM, complete, count_messages_tokens

OVERHEAD_TOKENS = 80        # the question, four passage headers and the template's tail: read with the evidence
PROBE_WORDS = 110           # about 160 tokens: long enough to time, short enough for a 2-core warm-up (~4 s)

_PROBE = ("Low-rank adaptation freezes the pretrained weights and trains two small matrices whose product is added "
          "to a weight matrix; quantization stores weights in fewer bits; the key-value cache keeps the keys and "
          "values of earlier tokens so each new token attends without recomputing them. ")


@dataclass(frozen=True)
class EvidenceBudget:
    tokens: int                        # evidence tokens the model reads per answer
    rule: str                          # "measured" | "fixed"
    why: str                           # one line: how the number was reached
    prefill_tok_s: float | None = None
    target_s: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def size_budget(prefill_tok_s: float, *, target_s: float, floor: int, cap: int,
                overhead: int = OVERHEAD_TOKENS) -> EvidenceBudget:
    """The evidence budget for a model that reads ``prefill_tok_s`` prompt tokens a second."""
    raw = int(prefill_tok_s * target_s) - overhead
    tokens = max(floor, min(raw, cap))
    why = f"measured {prefill_tok_s:.0f} tokens/s × {target_s:g} s − {overhead} = {raw}"
    if raw < floor:
        why += f", below the floor {floor} (answer_context_tokens)"
    elif raw > cap:
        why += f", above what the context window leaves ({cap})"
    return EvidenceBudget(tokens=tokens, rule="measured", why=why,
                          prefill_tok_s=round(prefill_tok_s, 1), target_s=target_s)


def fixed_budget(tokens: int, reason: str) -> EvidenceBudget:
    return EvidenceBudget(tokens=tokens, rule="fixed", why=reason)


SPEED_FILE = "reading_speed.json"     # under <data_dir>/logs: one measurement per model and machine
SPEED_MAX_AGE_S = 7 * 24 * 3600


def remembered_prefill(llm: LLM, path: Path, key: str, *, now: float | None = None) -> tuple[float | None, bool]:
    """The reading speed for ``key`` (model and machine) from ``path`` when measured in the last week, else
    measured now and stored (a failed write only loses the memory). Returns (speed, measured_now). A speed the
    model declares (the fake's simulated one) is returned as it is and not stored."""
    if _declares_speed(llm):
        return measure_prefill(llm), False
    now = time.time() if now is None else now
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    rec = known.get(key)
    if isinstance(rec, dict) and isinstance(rec.get("tok_s"), (int, float)) and now - rec.get("at", 0) < SPEED_MAX_AGE_S:
        return float(rec["tok_s"]), False
    speed = measure_prefill(llm)
    if speed is not None:
        known[key] = {"tok_s": round(speed, 2), "at": now}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
            tmp.replace(path)
        except OSError:
            pass
    return speed, True


def _declares_speed(llm: LLM) -> bool:
    return getattr(llm, "prefill_tokens_per_s", "measure") != "measure"


def measure_prefill(llm: LLM) -> float | None:
    """Prompt tokens the model reads per second (None: this model has no speed to measure).

    A model may declare its speed (``prefill_tokens_per_s``: the fake's simulated one); a model that declares
    ``None`` is not measured. Otherwise one 1-token completion of a prompt that starts with a random nonce
    (so no server's prompt cache holds it) is timed."""
    if _declares_speed(llm):
        return llm.prefill_tokens_per_s
    words = (_PROBE * 8).split()[:PROBE_WORDS]
    messages = [{"role": "user", "content": f"[{secrets.token_hex(6)}] " + " ".join(words)
                 + "\nReply with one word: ok."}]
    n = count_messages_tokens(llm, messages)
    t0 = time.perf_counter()
    complete(llm, messages, max_tokens=1, temperature=0.0)
    dt = time.perf_counter() - t0
    return n / dt if dt > 0 else None
