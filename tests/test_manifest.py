from pathlib import Path

import pytest

from wtours.manifest import DEFAULT_MANIFEST, ManifestError, is_creative_commons, load_manifest, select

REFERENCE_IDS = {
    "amsterdam": "E07rTPgIvn0", "bangkok": "hUGcHvN4mME", "chiang_mai": "jyxIRzlkO_g", "istanbul": "mA9lYWyXMYU",
    "kuala_lumpur": "yLTycPjm0nk", "singapore": "aUJl46bEWYo", "stockholm": "Jr9x-RB4E1U", "venice": "fGX0Te6pFvk",
    "wildlife": "Q0ML5oAjX_w", "zurich": "_NmYvuEILw4",
}


def test_shipped_manifest_holds_the_ten_walking_tours():
    entries = load_manifest(DEFAULT_MANIFEST)
    assert {e.id: e.url for e in entries} == {k: f"https://www.youtube.com/watch?v={v}" for k, v in REFERENCE_IDS.items()}
    for e in entries:
        assert is_creative_commons(e.license)
        assert (e.width, e.height, e.fps) == (3840, 2160, 60.0)
        assert e.city


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, expected",
    [
        ("id,license\na,CC-BY-4.0\n", r"m.csv:1: missing column\(s\) url"),
        ("id,url,license\na,x.mp4,CC-BY-4.0\na,y.mp4,CC-BY-4.0\n", r"m.csv:3: duplicate id 'a' \(first on line 2\)"),
        ("id,url,license\na,,CC-BY-4.0\n", r"m.csv:2: empty url for id 'a'"),
        ("id,url,license\na,x.mp4,GPL-ish\n", r"m.csv:2: bad license value 'GPL-ish'"),
        ("id,url,license\na.b,x.mp4,CC-BY-4.0\n", r"m.csv:2: id 'a.b' may only hold"),
        ("id,url,license\na,x.mp4,CC-BY-4.0,extra\n", r"m.csv:2: expected 3 fields"),
        ("id,url,license,fps\na,x.mp4,CC-BY-4.0,fast\n", r"m.csv:2: column 'fps' must be a number"),
        ("id,url,license\n", r"has a header but no videos"),
    ],
)
def test_malformed_manifests_name_file_line_and_problem(tmp_path, text, expected):
    with pytest.raises(ManifestError, match=expected):
        load_manifest(_write(tmp_path, text))


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ManifestError) as err:
        load_manifest(_write(tmp_path, "id,url,license\na,,CC-BY-4.0\nb,y.mp4,nope\n"))
    assert "m.csv:2: empty url" in str(err.value) and "m.csv:3: bad license" in str(err.value)


def test_local_paths_become_file_urls_relative_to_the_manifest(tmp_path):
    (tmp_path / "clips").mkdir()
    path = _write(tmp_path, "id,url,license\na,clips/a.mp4,CC0-1.0\nb,file:///x/b.mp4,CC-BY-SA-4.0\nc,https://e.org/v,unknown\n")
    urls = [e.url for e in load_manifest(path)]
    assert urls == [(tmp_path / "clips" / "a.mp4").resolve().as_uri(), "file:///x/b.mp4", "https://e.org/v"]


def test_select_keeps_order_and_rejects_unknown_ids():
    entries = load_manifest(DEFAULT_MANIFEST)
    assert [e.id for e in select(entries, ["zurich", "venice"])] == ["zurich", "venice"]
    assert len(select(entries, [])) == 10
    with pytest.raises(ManifestError, match="unknown id\\(s\\) paris"):
        select(entries, ["venice", "paris"])


@pytest.mark.parametrize("value, cc", [("CC-BY-3.0", True), ("cc-by-nc-sa-4.0", True), ("CC0-1.0", True), ("CC-BY", True),
                                       ("MIT", False), ("unknown", False), ("CC-XYZ", False)])
def test_creative_commons_ids(value, cc):
    assert is_creative_commons(value) is cc
