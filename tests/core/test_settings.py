import pytest

from core.settings import Settings, SettingsError, load_settings


def test_guides_toml_is_read_and_env_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in ("GUIDES_TOP_K", "GUIDES_LLM"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "guides.toml").write_text('top_k = 7\nllm = "bundled-small"\n')
    s = Settings()
    assert (s.top_k, s.llm) == (7, "bundled-small")
    monkeypatch.setenv("GUIDES_TOP_K", "3")
    assert Settings().top_k == 3                      # the environment outranks the file
    assert Settings(top_k=9).top_k == 9               # and keyword arguments outrank both


def test_bad_value_in_guides_toml_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GUIDES_TOP_K", raising=False)
    (tmp_path / "guides.toml").write_text("top_k = -1\n")
    with pytest.raises(SettingsError, match=r"top_k=-1.*GUIDES_TOP_K or guides.toml"):
        load_settings()


def test_unknown_key_in_guides_toml_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "guides.toml").write_text("top_kk = 3\n")
    with pytest.raises(SettingsError, match="top_kk"):
        load_settings()
