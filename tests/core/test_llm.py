"""LLM registry, the fake backend, and the bundled model's assembly and verification."""

from __future__ import annotations

import hashlib
import os

import pytest

from core import bundled
from core.llm import FakeLLM, LLMError, OpenAICompatLLM, count_messages_tokens, complete, load_llm
from core.settings import Settings


def test_unknown_backend_lists_valid_names(tmp_path):
    with pytest.raises(LLMError) as e:
        load_llm(Settings(llm="llamafile", data_dir=tmp_path))
    msg = str(e.value)
    assert "'llamafile'" in msg and "GUIDES_LLM" in msg
    for name in ("bundled", "gguf:<path>", "openai", "fake"):
        assert name in msg


def test_fake_backend_by_name(tmp_path):
    llm = load_llm(Settings(llm="fake", data_dir=tmp_path, llm_context_window=2048))
    assert isinstance(llm, FakeLLM) and llm.context_window == 2048


def test_backend_capabilities_without_starting_anything(tmp_path):
    bundled_llm = load_llm(Settings(llm="bundled", data_dir=tmp_path, llm_context_window=2048))
    assert bundled_llm.name.startswith("bundled:qwen2.5-coder-1.5b")
    assert load_llm(Settings(llm="bundled-small", data_dir=tmp_path)).name.startswith("bundled-small:qwen2.5-coder-0.5b")
    assert bundled_llm.supports_prefill and bundled_llm.default_prompt_budget == 450
    assert bundled_llm.context_window == 2048 and bundled_llm._server is None     # lazy: nothing assembled or started
    assert not (tmp_path / "models").exists()
    remote = load_llm(Settings(llm="openai", data_dir=tmp_path, llm_model="m", llm_base_url="http://127.0.0.1:9/v1"))
    assert not remote.supports_prefill and remote.default_prompt_budget is None


def test_gguf_missing_file_names_the_setting(tmp_path):
    with pytest.raises(LLMError, match="does not exist.*GUIDES_LLM"):
        load_llm(Settings(llm=f"gguf:{tmp_path / 'nope.gguf'}", data_dir=tmp_path))


def test_openai_needs_a_model_name(tmp_path):
    with pytest.raises(LLMError, match="GUIDES_LLM_MODEL"):
        load_llm(Settings(llm="openai", data_dir=tmp_path, llm_base_url="http://127.0.0.1:9/v1"))


def test_openai_without_key_or_url_names_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(LLMError, match="MY_KEY"):
        load_llm(Settings(llm="openai", data_dir=tmp_path, llm_model="m", llm_api_key_env="MY_KEY"))


def test_openai_unreachable_endpoint_names_the_setting(tmp_path):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    llm = load_llm(Settings(llm="openai", data_dir=tmp_path, llm_model="m", llm_base_url="http://127.0.0.1:9/v1"))
    assert isinstance(llm, OpenAICompatLLM)
    with pytest.raises(LLMError) as e:
        complete(llm, [{"role": "user", "content": "hi"}], max_tokens=5)
    assert "127.0.0.1:9" in str(e.value) and "GUIDES_LLM_BASE_URL" in str(e.value)


def test_complete_json_unreachable_endpoint_names_the_setting_it_was_given():
    # The judge's client names the judge's settings, not the answering model's.
    llm = OpenAICompatLLM(base_url="http://127.0.0.1:9/v1", model="m", api_key=None, context_window=4096,
                          setting_hint="GUIDES_JUDGE_BASE_URL", model_setting="GUIDES_JUDGE_MODEL")
    with pytest.raises(LLMError) as e:
        llm.complete_json([{"role": "user", "content": "hi"}], {"type": "object"}, max_tokens=5)
    assert "127.0.0.1:9" in str(e.value) and "GUIDES_JUDGE_BASE_URL" in str(e.value)


def test_fake_script_matches_substring_in_order():
    llm = FakeLLM({"LoRA": "LoRA answer [1].", "Lo": "never"})
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Question: what is LoRA?"}]
    assert complete(llm, msgs, max_tokens=50) == "LoRA answer [1]."
    assert llm.calls[-1]["max_tokens"] == 50


def test_fake_echo_rule_repeats_first_sentence_of_passage_one():
    user = '[1] G › S\n"""\nFirst sentence here. Second one.\n"""\n\nQuestion: q'
    out = complete(FakeLLM(), [{"role": "user", "content": user}], max_tokens=50)
    assert out == "First sentence here [1]."


def test_fake_respects_max_tokens_and_stop():
    llm = FakeLLM({"q": "one two three four"})
    msgs = [{"role": "user", "content": "q"}]
    assert complete(llm, msgs, max_tokens=2) == "one two"
    assert complete(llm, msgs, max_tokens=9, stop=[" three"]) == "one two"


def test_fake_unknown_rule_raises():
    with pytest.raises(ValueError, match="Supported rules"):
        FakeLLM(rule="poem")


def test_message_token_count_includes_template_overhead():
    llm = FakeLLM()
    msgs = [{"role": "system", "content": "a b c"}, {"role": "user", "content": "d e"}]
    assert count_messages_tokens(llm, msgs) > 5
    assert count_messages_tokens(llm, msgs) == count_messages_tokens(llm, msgs[:1]) + 2 + 6


def test_remote_token_estimate_overcounts_english():
    llm = OpenAICompatLLM(base_url="http://127.0.0.1:9/v1", model="m", api_key=None, context_window=4096)
    text = "Rotary position embeddings rotate query and key vectors by position."
    assert llm.count_tokens(text) >= len(text.split()) * 1.3
    assert llm.count_tokens("") == 0


# --------------------------------------------------------------------------- assembly
def _parts(tmp_path, contents):
    paths = []
    for i, c in enumerate(contents):
        p = tmp_path / f"part{i}.bin"
        p.write_bytes(c)
        paths.append(p)
    return paths


def test_assemble_concatenates_in_order_and_verifies(tmp_path):
    parts = _parts(tmp_path, [b"abc", b"def", b"g"])
    sha = hashlib.sha256(b"abcdefg").hexdigest()
    dest = tmp_path / "models" / "m.gguf"
    assert bundled.assemble(parts, dest, sha) == dest
    assert dest.read_bytes() == b"abcdefg"
    assert not list(dest.parent.glob("*.partial"))


def test_assemble_rejects_wrong_hash_and_leaves_no_file(tmp_path):
    parts = _parts(tmp_path, [b"abc", b"def"])
    dest = tmp_path / "models" / "m.gguf"
    with pytest.raises(bundled.BundledModelError, match="sha256"):
        bundled.assemble(parts, dest, hashlib.sha256(b"other").hexdigest())
    assert not dest.exists() and not list(dest.parent.glob("*.partial"))


def test_verification_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    parts = _parts(tmp_path, [b"abc", b"def"])
    sha = hashlib.sha256(b"abcdef").hexdigest()
    dest = tmp_path / "m.gguf"
    bundled.assemble(parts, dest, sha)
    calls = []
    real = bundled.sha256_file
    monkeypatch.setattr(bundled, "sha256_file", lambda p: calls.append(p) or real(p))
    assert bundled.is_verified(dest, sha) and calls == []          # stamp matches: no re-hash
    dest.write_bytes(b"abcdeX")                                    # same size, new mtime and content
    os.utime(dest, ns=(1, 1))
    assert not bundled.is_verified(dest, sha) and len(calls) == 1  # re-hashed and rejected
    bundled.assemble(parts, dest, sha)                             # re-assembled over the bad copy
    assert dest.read_bytes() == b"abcdef"


def test_part_paths_for_missing_package_says_how_to_install():
    with pytest.raises(bundled.BundledModelError, match="make install"):
        bundled.part_paths(("no_such_model_piece_pkg",))


def test_start_server_on_missing_file_names_the_setting(tmp_path):
    with pytest.raises(bundled.BundledModelError, match="does not exist"):
        bundled.start_server(tmp_path / "x.gguf", n_ctx=512, threads=1)
