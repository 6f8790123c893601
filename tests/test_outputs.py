"""No output may overwrite an input, a store or another output; input files are bounded before parsing."""

import os

import pytest

from nas.errors import SettingError
from nas.outputs import check_outputs, check_writable_folder, database_files
from nas.system import check_nesting, nesting_depth, read_text_file


def test_an_output_on_an_input_a_store_or_another_output_is_refused(tmp_path):
    spec, db, store = tmp_path / "spec.json", tmp_path / "s.db", tmp_path / "s.artifacts"
    ok = dict(inputs={"spec file": spec}, stores={"study database": db, "artifact store": store})
    check_outputs({"out": tmp_path / "best", "csv": tmp_path / "t.csv"}, **ok)
    cases = [({"out": spec}, "is the spec file"), ({"out": tmp_path}, "around the spec file"),
             ({"out": db}, "is the study database"), ({"out": store / "x"}, "lies inside the artifact store"),
             ({"out": store}, "is the artifact store"),
             ({"out": tmp_path / "r.html", "csv": tmp_path / "." / "r.html"}, "also the `out`")]
    for outputs, message in cases:
        with pytest.raises(SettingError, match=message) as e:
            check_outputs(outputs, **ok)
        assert e.value.name in outputs


def test_two_spellings_of_one_path_are_one_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(SettingError, match="is the study database"):
        check_outputs({"out": "sub/../s.db"}, stores={"study database": tmp_path / "s.db"})
    assert [p.name for p in database_files(tmp_path / "s.db")] == ["s.db", "s.db-journal", "s.db-wal", "s.db-shm",
                                                                  "s.db.lock"]


def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SettingError, match="is a file, not a folder"):
        check_writable_folder("artifacts", tmp_path / "file" / "a")
    check_writable_folder("artifacts", tmp_path / "new" / "deeper")  # made later: its ancestor is writable
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(SettingError, match="permission denied"):
            check_writable_folder("out", locked / "x")


def test_input_files_are_bounded_before_they_are_parsed(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2001)
    with pytest.raises(ValueError, match="larger than 2 KB"):
        read_text_file(big, 2000, "spec file")
    with pytest.raises(ValueError, match="not a regular file"):
        read_text_file("/dev/zero", 2000, "spec file")  # its size says 0; reading would never end
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        read_text_file(fifo, 2000, "spec file")  # opening it would wait for a writer
    with pytest.raises(ValueError, match="it is a folder"):
        read_text_file(tmp_path, 2000, "spec file")


def test_nesting_is_counted_outside_strings_and_by_indentation():
    assert nesting_depth('{"a": [1, {"b": "[[[["}]}') == 3
    assert nesting_depth("a:\n  b:\n    c: 1\n") == 2
    assert nesting_depth("[" * 60_000) == 60_000
    check_nesting("[" * 50, "the spec")
    with pytest.raises(ValueError, match="nested too deeply"):
        check_nesting("[" * 51, "the spec")
