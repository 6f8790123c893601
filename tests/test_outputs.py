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


def test_an_output_inside_another_is_refused(tmp_path):
    # nas-search --report out/r.html --export out: the export replaces its folder whole, report included
    with pytest.raises(SettingError, match="lies inside the `export`") as e:
        check_outputs({"export": tmp_path / "out", "report": tmp_path / "out" / "r.html"})
    assert e.value.name == "report"
    with pytest.raises(SettingError, match="holds the `report`"):
        check_outputs({"report": tmp_path / "out" / "r.html", "export": tmp_path / "out"})


WRITER = "nas-report"


def test_a_file_is_replaced_only_as_the_tool_wrote_it(tmp_path):
    from nas.outputs import check_own_file, owner_record, write_own_files

    mine = tmp_path / "notes.html"
    mine.write_text("<title>nas-report: copied marker</title> my notes")  # looks like ours: is not
    with pytest.raises(SettingError, match="is not a file nas-report wrote"):
        check_own_file("out", mine, WRITER)
    ours = tmp_path / "r.html"
    check_own_file("out", ours, WRITER)  # new
    write_own_files({ours: lambda p: p.write_text("page 1")}, WRITER)
    check_own_file("out", ours, WRITER)  # ours, unchanged: may be replaced
    write_own_files({ours: lambda p: p.write_text("page 2")}, WRITER)
    assert ours.read_text() == "page 2" and owner_record(ours).exists()
    ours.write_text("page 2, with the user's notes")
    with pytest.raises(SettingError, match="has changed since nas-report wrote it"):
        check_own_file("out", ours, WRITER)
    assert mine.read_text().endswith("my notes")


def test_a_pipe_or_a_link_is_refused_without_opening_it(tmp_path):
    from nas.outputs import check_own_file

    os.mkfifo(tmp_path / "fifo")  # opening it would wait forever for a reader
    (tmp_path / "target").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for name, message in (("fifo", "not a regular file"), ("link", "is a link"), (".", "is a folder")):
        with pytest.raises(SettingError, match=message):
            check_own_file("csv", tmp_path / name, WRITER)


def test_files_written_together_are_all_or_nothing_and_keep_their_mode(tmp_path):
    from nas.outputs import write_own_files

    page, table = tmp_path / "r.html", tmp_path / "r.csv"
    write_own_files({page: lambda p: p.write_text("old page")}, WRITER)
    os.chmod(page, 0o600)  # the user made the report private

    def full_disk(path):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_own_files({table: lambda p: p.write_text("rows"), page: full_disk}, WRITER)
    assert not table.exists() and page.read_text() == "old page"  # nothing half-done, the old file intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.html.nas-mnist", "r.html"]
    write_own_files({page: lambda p: p.write_text("new page")}, WRITER)
    assert oct(os.stat(page).st_mode & 0o777) == oct(0o600)
