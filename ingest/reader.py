"""Find and read guide files; anything unreadable is reported by name and skipped."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GUIDE_SUFFIXES = (".md", ".markdown", ".txt")


@dataclass(frozen=True)
class RawGuide:
    path: Path          # absolute path on disk
    rel: str            # path relative to the guides folder, with '/' separators: the guide's id
    text: str           # decoded text (not yet repaired)
    sha256: str         # hash of the raw bytes


@dataclass(frozen=True)
class Skipped:
    rel: str
    reason: str

    def message(self) -> str:
        return f"skipped {self.rel}: {self.reason}"


def find_guides(folder: Path) -> list[Path]:
    """Every guide file under ``folder`` (recursively), sorted for a stable order."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Guides folder {folder} does not exist. Put .md/.markdown/.txt guides there, "
            f"or point GUIDES_GUIDES_DIR at the folder that holds them."
        )
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in GUIDE_SUFFIXES and not p.name.startswith(".")
    )


def read_guide(path: Path, root: Path) -> RawGuide | Skipped:
    """Decode one file as UTF-8 (BOM allowed); binary, empty or undecodable files become ``Skipped``."""
    rel = path.relative_to(root).as_posix()
    try:
        data = path.read_bytes()
    except OSError as e:
        return Skipped(rel, f"cannot be read ({e.strerror}); check its permissions")
    if not data:
        return Skipped(rel, "the file is empty; add text or remove it")
    if not data.strip():
        return Skipped(rel, "contains only whitespace; add text or remove it")
    if b"\x00" in data[:8192]:
        return Skipped(rel, "looks binary (contains NUL bytes); only UTF-8 text guides are indexed")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return Skipped(
            rel,
            f"is not valid UTF-8 (byte 0x{data[e.start]:02x} at line {line}); "
            f"re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
        )
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        return Skipped(rel, "contains only whitespace; add text or remove it")
    return RawGuide(path=path, rel=rel, text=text, sha256=hashlib.sha256(data).hexdigest())
