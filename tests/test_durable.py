"""Atomic, durable replacement of small text files (durable.replace_text)."""

import json
import subprocess
import sys

import pytest

from napari_lesion_harvest.durable import replace_text


def test_the_new_text_replaces_the_old_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "recent.json"
    path.write_text("old", encoding="utf-8")
    assert replace_text(path, "new ü\r\n") == path
    assert path.read_bytes() == "new ü\r\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recent.json"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "DL_info.csv"
    path.write_text("old,row\n", encoding="utf-8")
    with pytest.raises(TypeError):
        replace_text(path, b"bytes are not text")
    assert path.read_text(encoding="utf-8") == "old,row\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DL_info.csv"]


def test_a_reader_in_another_process_sees_only_whole_versions(tmp_path):
    path = tmp_path / "rates.json"
    versions = [str(k) * (20_000 + k) for k in range(10)]
    replace_text(path, versions[0])
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys, pathlib\n"
            "path = pathlib.Path(sys.argv[1])\n"
            "seen = set()\n"
            "while True:\n"
            "    text = path.read_text(encoding='utf-8')\n"
            "    if text == 'stop':\n"
            "        break\n"
            "    seen.add((text[0], len(text), len(set(text))))\n"
            "print(json.dumps(sorted(seen)))\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(20):
        for text in versions:
            replace_text(path, text)
    replace_text(path, "stop")
    out, _ = reader.communicate(timeout=60)
    whole = {(text[0], len(text), 1) for text in versions}
    seen = {tuple(version) for version in json.loads(out)}
    assert seen and seen <= whole
