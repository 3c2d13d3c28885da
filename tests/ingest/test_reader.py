from pathlib import Path

import pytest

from ingest.reader import RawGuide, Skipped, find_guides, read_guide


def test_reads_utf8_and_skips_bad_files(tmp_path: Path):
    (tmp_path / "ok.md").write_text("# Hi\r\ntext\n", encoding="utf-8")
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    (tmp_path / "empty.md").write_text("")
    (tmp_path / "blank.md").write_text("  \n\n")
    (tmp_path / "bin.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (tmp_path / "latin.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tmp_path / "ignored.pdf").write_bytes(b"%PDF")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "deep.markdown").write_text("deep")
    files = find_guides(tmp_path)
    assert [f.name for f in files] == ["bin.md", "blank.md", "bom.txt", "empty.md", "latin.txt", "ok.md", "deep.markdown"]
    got = {f.name: read_guide(f, tmp_path) for f in files}
    assert isinstance(got["ok.md"], RawGuide) and got["ok.md"].text == "# Hi\ntext\n"
    assert got["bom.txt"].text == "hello"
    assert got["deep.markdown"].rel == "sub/deep.markdown"
    for name, word in [("empty.md", "empty"), ("blank.md", "whitespace"), ("bin.md", "binary"), ("latin.txt", "UTF-8")]:
        assert isinstance(got[name], Skipped), name
        assert word in got[name].message() and name in got[name].message()
    assert "line 1" in got["latin.txt"].reason


def test_missing_folder_says_which_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="GUIDES_GUIDES_DIR"):
        find_guides(tmp_path / "nope")
