"""Repair and clean guide text: mojibake (via ftfy), web-page chrome, invisible characters.

Every cleaner maps one line to one line (or drops whole lines), so line numbers in the
cleaned text still point at the same lines of the source file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import ftfy

# Characters that Mac Roman maps to bytes >= 0x80: a run of them may be UTF-8 read as Mac Roman.
_MAC_HIGH = "".join(
    ch for ch in (bytes([b]).decode("mac_roman") for b in range(0x80, 0x100))
)
_MAC_RUN = re.compile("[" + re.escape(_MAC_HIGH) + "]{2,}")


@dataclass
class CleanReport:
    mojibake_fixed: int = 0       # lines whose text ftfy or the residual pass changed
    chrome_lines_dropped: int = 0


def _redecode_run(m: re.Match) -> str:
    """Re-read a run of Mac Roman characters as the UTF-8 bytes they came from, if that is valid."""
    run = m.group(0)
    try:
        fixed = run.encode("mac_roman").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return run
    return fixed


def repair_mojibake(text: str) -> tuple[str, int]:
    """Fix mojibake with ftfy, then re-decode the Mac Roman runs ftfy leaves (e.g. '√ó' -> '×').

    The second pass only runs on text in which ftfy itself found mojibake, and only
    replaces a run when its Mac Roman bytes are valid UTF-8, so clean text is untouched.
    Returns the text and the number of lines changed.
    """
    lines = text.split("\n")
    out, changed, ftfy_found = [], 0, False
    for line in lines:
        fixed = ftfy.fix_text(line, normalization="NFC")
        if fixed != line:
            ftfy_found = True
        out.append(fixed)
    if ftfy_found:
        out = [_MAC_RUN.sub(_redecode_run, line) for line in out]
    for a, b in zip(lines, out):
        changed += a != b
    return "\n".join(out), changed


_CHROME_EXACT = {
    "skip to content", "latest commit", "history", "file metadata and controls",
    "raw", "blame", "preview", "code", "copy raw file", "download raw file",
    "edit this file", "open symbols panel", "top",
}
_CHROME_RE = re.compile(
    r"^\s*(\d[\d,]* lines \(\d[\d,]* (loc|sloc)\)( · [\d.]+ [KMG]?B)?|[\d.]+ [KMG]?B)\s*$", re.I
)


def is_web_page(text: str) -> bool:
    """A copy of a rendered repository page starts with its chrome."""
    head = [l.strip().lower() for l in text.split("\n")[:20] if l.strip()]
    return bool(head) and head[0] == "skip to content"


def drop_web_chrome(text: str) -> tuple[str, int]:
    """Blank out page-chrome lines (keeping line numbers): navigation words and file-size lines."""
    lines = text.split("\n")
    dropped = 0
    for i, line in enumerate(lines):
        s = line.strip()
        if s.lower() in _CHROME_EXACT or _CHROME_RE.match(s):
            lines[i] = ""
            dropped += 1
    return "\n".join(lines), dropped


_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")


def normalise_spaces(text: str) -> str:
    """Drop zero-width characters and turn non-breaking spaces into spaces."""
    text = _INVISIBLE.sub("", text)
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def clean_text(text: str) -> tuple[str, CleanReport]:
    """The full cleaning pass for one guide; the line count never changes."""
    report = CleanReport()
    text, report.mojibake_fixed = repair_mojibake(text)
    text = normalise_spaces(text)
    if is_web_page(text):
        text, report.chrome_lines_dropped = drop_web_chrome(text)
    return text, report
