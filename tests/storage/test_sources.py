"""``sources.json`` round-trips and never names a file outside the data folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.images import StorageError
from storage.sources import read_sources, write_sources


def test_sources_round_trip(tmp_path: Path) -> None:
    files = [("n01/a.JPEG", 0), ("n02/b.JPEG", 1)]
    write_sources(tmp_path / "sources.json", "imagenet", files)
    assert read_sources(tmp_path / "sources.json") == files


@pytest.mark.parametrize("name", ["../outside/x.JPEG", "/abs/x.JPEG", "n01/../../x.JPEG"])
def test_an_entry_outside_the_data_folder_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "sources.json"
    path.write_text(json.dumps({"format": 1, "dataset": "imagenet", "files": [[name, 3]]}))
    with pytest.raises(StorageError, match=r"sources\.json: entry 0: image path .* leaves"):
        read_sources(path)


@pytest.mark.parametrize(
    ("content", "why"),
    [("{", "unreadable"), ("[]", "no 'files' list"), ('{"files": [["a", true]]}', "entry 0")],
)
def test_a_malformed_file_is_one_error(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "sources.json"
    path.write_text(content)
    with pytest.raises(StorageError, match=why):
        read_sources(path)
