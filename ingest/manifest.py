"""What a published index version's files should contain: ``manifest.json``, written before publishing.

Every file of a version folder (meta.json, chunks.jsonl, vectors.npy, practice.jsonl, the embedded engine's
shard) is listed with its size and sha256. ``IndexLayout.commit`` writes the manifest into the ``.partial``
folder last, so the same atomic rename publishes it with the files it describes. ``verify`` reads it back:
a missing file, another size or another checksum is named. The reader lease (``.readers``) is not content and
is left out.

Example::

    write_manifest(version_dir)
    for d in verify(version_dir):
        print(d.file, d.problem)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.bundled import sha256_file

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_SKIP = {MANIFEST, ".readers"}


@dataclass(frozen=True)
class Damage:
    file: str                 # relative to the version folder
    problem: str              # "missing", "size 10 bytes, expected 12", "checksum differs", ...


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in _SKIP
                  and not p.name.startswith(".") and not p.name.endswith((".lock", ".tmp")))


def build_manifest(folder: Path) -> dict:
    return {"format": MANIFEST_FORMAT,
            "files": {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
                      for p in _files(folder)}}


def write_manifest(folder: Path) -> dict:
    """Write ``manifest.json`` for ``folder`` (atomically, synced) and return it."""
    man = build_manifest(folder)
    tmp = folder / f".{MANIFEST}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(man, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    return man


def read_manifest(folder: Path) -> dict | None:
    """The manifest, or None when the version predates manifests. A damaged manifest raises ValueError."""
    try:
        man = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{folder / MANIFEST} is damaged ({e})") from None
    if not isinstance(man, dict) or not isinstance(man.get("files"), dict):
        raise ValueError(f"{folder / MANIFEST} is not a manifest")
    return man


def verify(folder: Path, *, quick: bool = False, only: set[str] | None = None) -> list[Damage]:
    """Files of ``folder`` that differ from its manifest (sizes only when ``quick``; ``only``: these files).
    A version without a manifest has nothing to check against: one Damage says so."""
    try:
        man = read_manifest(folder)
    except ValueError as e:
        return [Damage(MANIFEST, str(e).split(" is ", 1)[-1])]
    if man is None:
        return [Damage(MANIFEST, "missing: the version was written before manifests, so it cannot be checked")]
    out = []
    for rel, want in man["files"].items():
        if only is not None and rel not in only:
            continue
        p = folder / rel
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            out.append(Damage(rel, "missing"))
            continue
        if size != want.get("size"):
            out.append(Damage(rel, f"size {size:,} bytes, expected {want.get('size'):,}"))
        elif not quick and sha256_file(p) != want.get("sha256"):
            out.append(Damage(rel, "checksum differs from the manifest"))
    return out
