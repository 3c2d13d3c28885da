"""``guides check``: verify everything the project keeps under its data folder, and say how to fix what is not.

- the index: ``CURRENT``, then every kept version against its manifest (``ingest/manifest.py``; sizes only
  with ``quick``), and versions set aside as damaged;
- the bundled model files: their size and, in full, their sha256 against the ones the project records;
- the SQLite stores (feedback, practice history, judge cache): ``PRAGMA integrity_check``, read-only;
- the small JSON caches (the eval's speed, the model's reading speed): that they parse.

Each row: what, where, its state (ok, damaged, missing, set aside, not checkable) and, when it is not ok, the
command that fixes it. ``check`` returns the rows; the command exits non-zero when any row is damaged.

Example::

    rows = check_data(settings, quick=True)
    print(render(rows))
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings

OK, DAMAGED, MISSING, ASIDE, UNCHECKED = "ok", "damaged", "missing", "set aside", "not checkable"


@dataclass
class Row:
    what: str
    path: Path
    state: str
    detail: str = ""
    fix: str = ""

    @property
    def bad(self) -> bool:
        return self.state == DAMAGED


def _index_rows(settings: Settings, quick: bool) -> list[Row]:
    from ingest.manifest import verify
    from ingest.store import IndexError_, IndexLayout

    layout = IndexLayout(settings)
    rows: list[Row] = []
    cur_file = layout.root / "CURRENT"
    if not cur_file.exists():
        return [Row("index", layout.root, MISSING, "no index built yet", "guides ingest")]
    try:
        cur = layout.current_vid()
        rows.append(Row("index pointer (CURRENT)", cur_file, OK, f"version {cur}"))
    except IndexError_ as e:
        cur = None
        rows.append(Row("index pointer (CURRENT)", cur_file, DAMAGED, str(e).split(";")[0], "guides ingest"))
    versions = sorted(p for p in layout.versions.iterdir() if p.is_dir()) if layout.versions.is_dir() else []
    if cur and not (layout.versions / cur).is_dir():
        rows.append(Row("index version (current)", layout.versions / cur, MISSING, "CURRENT points at it",
                        "guides ingest --rebuild"))
    for p in versions:
        if p.name.endswith((".partial", ".trash")):
            continue
        if p.name.endswith(".damaged"):
            rows.append(Row("index version (damaged, replaced)", p, ASIDE, "kept for inspection",
                            "removed by the next `guides ingest`"))
            continue
        label = "index version (current)" if p.name == cur else "index version (kept)"
        damage = verify(p, quick=quick)
        if len(damage) == 1 and damage[0].file == "manifest.json" and damage[0].problem.startswith("missing: the"):
            rows.append(Row(label, p, UNCHECKED, "written before manifests", "guides ingest --rebuild (to get one)"))
        elif damage:
            rows.append(Row(label, p, DAMAGED, "; ".join(f"{d.file}: {d.problem}" for d in damage[:3])
                            + (f"; and {len(damage) - 3} more" if len(damage) > 3 else ""),
                            "guides ingest" if p.name == cur else "guides ingest (the next one removes it)"))
        else:
            rows.append(Row(label, p, OK, "every file matches its manifest" + (" (sizes only)" if quick else "")))
    return rows


def _model_rows(settings: Settings, quick: bool) -> list[Row]:
    from core.bundled import BUNDLED_MODELS, sha256_file

    rows = []
    for m in BUNDLED_MODELS.values():
        path = settings.data_dir / "models" / f"{m.file_name}.gguf"
        if not path.exists():
            if settings.llm == m.key:
                rows.append(Row(f"model {m.key}", path, MISSING, "the LLM in use", "guides prepare"))
            continue
        size = path.stat().st_size
        if size != m.size:
            rows.append(Row(f"model {m.key}", path, DAMAGED, f"size {size:,} bytes, expected {m.size:,}",
                            f"rm {path} && guides prepare"))
        elif not quick and sha256_file(path) != m.sha256:
            rows.append(Row(f"model {m.key}", path, DAMAGED, "sha256 differs from the recorded one",
                            f"rm {path} && guides prepare"))
        else:
            rows.append(Row(f"model {m.key}", path, OK, "size matches" if quick else "sha256 matches"))
    return rows


def _sqlite_row(what: str, path: Path, fix: str) -> Row | None:
    if not path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            got = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return Row(what, path, DAMAGED, f"not a readable database ({e})", fix)
    if got == ["ok"]:
        return Row(what, path, OK, "integrity_check ok")
    return Row(what, path, DAMAGED, "; ".join(got[:2]), fix)


def _json_row(what: str, path: Path) -> Row | None:
    if not path.exists():
        return None
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return Row(what, path, DAMAGED, f"unreadable ({type(e).__name__}); a cache, safe to delete", f"rm {path}")
    return Row(what, path, OK, "parses")


def check_data(settings: Settings, *, quick: bool = False) -> list[Row]:
    from answer.budget import SPEED_FILE
    from eval.judge_cache import CACHE_FILE
    from guides_qa.feedback import FILENAME
    from practice import store_path

    d = settings.data_dir
    rows = _index_rows(settings, quick) + _model_rows(settings, quick)
    for row in (
        _sqlite_row("feedback database", d / FILENAME,
                    f"mv {d / FILENAME} {d / FILENAME}.damaged (the feedback in it is lost; try `sqlite3 .recover`)"),
        _sqlite_row("practice history", store_path(settings),
                    f"mv {store_path(settings)} {store_path(settings)}.damaged (practice history restarts)"),
        _sqlite_row("ragas judgement cache", d / "eval" / CACHE_FILE, f"rm {d / 'eval' / CACHE_FILE}* (a cache)"),
        _json_row("eval speed record", d / "eval" / "speed.json"),
        _json_row("model reading speed", d / "logs" / SPEED_FILE),
    ):
        if row is not None:
            rows.append(row)
    return rows


def render(rows: list[Row]) -> str:
    w = max(len(r.what) for r in rows)
    lines = [f"{'what':<{w}}  {'state':<13}  detail", f"{'-' * w}  {'-' * 13}  {'-' * 40}"]
    for r in rows:
        lines.append(f"{r.what:<{w}}  {r.state:<13}  {r.detail}  [{r.path}]")
        if r.state not in (OK,) and r.fix:
            lines.append(f"{'':<{w}}  {'':<13}  fix: {r.fix}")
    bad = [r for r in rows if r.bad]
    lines.append(f"\n{len(bad)} damaged." if bad else "\nNothing damaged.")
    return "\n".join(lines)
