"""The storage: URLs and their secrets, the lock, and databases opened without being written."""

import hashlib
import sqlite3
import threading
import time

import optuna
import pytest

from nas.errors import SettingError
from nas.store.storage import database_state, make_storage, storage_lock
from nas.store.urls import redact, redact_text, secrets_of, sqlite_path

SECRET = "s3cret-Pw"
# Every form SQLAlchemy accepts a password in: the userinfo (also percent-encoded), a query parameter,
# a libpq DSN key.
URL_FORMS = [f"postgresql://me:{SECRET}@db:5432/x", f"postgresql://me@db:5432/x?password={SECRET}",
             f"postgresql+psycopg://me@db/x?sslpassword={SECRET}&application_name=nas",
             "mysql+pymysql://me:" + SECRET.replace("-", "%2D") + "@db/x"]


@pytest.mark.parametrize("url", URL_FORMS)
def test_a_secret_in_any_form_is_hidden_everywhere_it_is_shown(url):
    shown = redact(url)
    assert SECRET not in shown and "***" in shown and "db" in shown
    assert secrets_of(url) == [SECRET]
    assert SECRET not in redact_text(f"nas-search --storage={url} --study s")
    assert SECRET not in redact_text(f"driver says: {SECRET} refused", url)
    assert SECRET not in redact_text(f"host=db password={SECRET} dbname=x")


def test_passwords_never_show():
    assert redact("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact("postgresql://me@db:5432/x?password=secret") == "postgresql://me@db:5432/x?password=***"
    assert redact("sqlite:///studies/mnist.db") == "sqlite:///studies/mnist.db"
    with pytest.raises(SettingError) as caught:
        make_storage("postgresql://me:secret@127.0.0.1:1/x")
    assert "secret" not in str(caught.value) and "me:***@127.0.0.1:1" in str(caught.value)


def test_two_spellings_of_one_sqlite_file_share_one_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///a/../s.db") == sqlite_path(f"sqlite:///{tmp_path}/s.db") == tmp_path / "s.db"
    order = []

    def hold():
        with storage_lock(f"sqlite:///{tmp_path}/s.db"):
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    thread = threading.Thread(target=hold)
    thread.start()
    time.sleep(0.1)
    with storage_lock("sqlite:///a/../s.db"):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]


def test_a_mistyped_database_is_not_created(tmp_path):
    with pytest.raises(SettingError, match="no database at"):
        make_storage(f"sqlite:///{tmp_path}/typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_only_commands_never_write_a_database_that_is_not_a_study_database(tmp_path):
    empty, foreign, text = tmp_path / "empty.db", tmp_path / "foreign.db", tmp_path / "page.html"
    empty.write_bytes(b"")
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    text.write_text("<html></html>")
    before = {p: digest(p) for p in (empty, foreign, text)}
    for path, message in ((empty, "is empty"), (foreign, "holds other tables"), (text, "not a SQLite database")):
        for mode in ("read", "write"):
            with pytest.raises(SettingError, match=message):
                make_storage(f"sqlite:///{path}", mode=mode)
    with pytest.raises(SettingError, match="holds other tables"):
        make_storage(f"sqlite:///{foreign}")  # nor is another program's file made into a study database
    assert {p: digest(p) for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "foreign.db", "page.html"]  # no lock file either
    assert database_state(f"sqlite:///{tmp_path}/none.db") == "missing"
    assert database_state(f"sqlite:///{empty}") == "empty"
    with pytest.raises(SettingError, match="keeps nothing"):
        make_storage("sqlite:///:memory:")


def test_optunas_tables_half_made_by_another_run_are_not_another_programs(tmp_path):
    # Optuna creates its tables one by one: a run that looks in between must wait its turn, not refuse.
    half, mixed = tmp_path / "half.db", tmp_path / "mixed.db"
    for path, tables in ((half, ("studies", "study_directions", "version_info")), (mixed, ("studies", "notes"))):
        with sqlite3.connect(path) as db:
            for table in tables:
                db.execute(f"CREATE TABLE {table} (x INTEGER)")
    assert database_state(f"sqlite:///{half}") == "empty"
    with pytest.raises(SettingError, match="holds other tables"):
        database_state(f"sqlite:///{mixed}")


def test_a_study_database_read_stays_byte_identical(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=make_storage(url))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    before = digest(tmp_path / "s.db")
    storage = make_storage(url, mode="read")
    assert database_state(url) == "optuna" and len(optuna.load_study(study_name="s", storage=storage).trials) == 2
    with pytest.raises(Exception) as refused:
        storage.set_study_user_attr(study._study_id, "k", 1)  # opened read-only: a write cannot happen
    chain = [refused.value]
    while chain[-1].__cause__ or chain[-1].__context__:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    assert any("readonly" in str(e) for e in chain)
    assert digest(tmp_path / "s.db") == before


@pytest.mark.parametrize("folder", ["run#3", "run?3", "run%3", "run%233"])
def test_a_folder_named_with_uri_characters_opens_its_own_database(tmp_path, folder):
    # In a URI '#' and '?' end the path and '%' starts an escape: an unencoded read-only URI of
    # run#3/s.db opened (and created) the file "run", or read another study's database sitting there.
    from urllib.parse import quote

    decoy = tmp_path / folder.split("#")[0].split("?")[0].split("%")[0]
    optuna.create_study(study_name="other", storage=make_storage(f"sqlite:///{decoy}"))
    (tmp_path / folder).mkdir()
    url = f"sqlite:///{quote(str(tmp_path / folder / 's.db'))}"  # '?' and '%' must be encoded in a URL
    assert sqlite_path(url) == tmp_path / folder / "s.db"
    optuna.create_study(study_name="mine", storage=make_storage(url))
    before = {p.name: digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    assert database_state(url) == "optuna"
    names = [s.study_name for s in optuna.get_all_study_summaries(make_storage(url, mode="read"))]
    assert names == ["mine"]
    assert {p.name: digest(p) for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing made or written


def test_a_raw_question_mark_in_a_sqlite_path_is_refused_not_cut(tmp_path):
    with pytest.raises(SettingError, match="written %3F"):
        sqlite_path(f"sqlite:///{tmp_path}/run?3/s.db")
    assert sqlite_path(f"sqlite:///{tmp_path}/s.db?timeout=5") == tmp_path / "s.db"


def test_a_database_a_kill_left_mid_commit_is_rolled_back_not_refused(tmp_path):
    """SIGKILL during a commit leaves a hot journal, which a read-only connection may not roll back: every
    run that first looked at the file read-only refused it as 'not a SQLite database', for good (the
    kill test met it). The first run to open it rolls it back to its last commit and goes on."""
    import subprocess
    import sys

    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    optuna.create_study(study_name="s", storage=make_storage(url))
    killed = ("import os, signal, sqlite3\n"
              f"db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
              "db.execute('PRAGMA cache_size=1')  # the transaction's pages reach the file before its commit\n"
              "db.execute('BEGIN IMMEDIATE')\n"
              "db.execute('CREATE TABLE filler (x)')\n"
              "db.executemany('INSERT INTO filler VALUES (?)', [(i,) for i in range(5000)])\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", killed], check=False)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # the state the kill left
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            con.execute("SELECT count(*) FROM studies").fetchone()
    assert database_state(url) == "optuna"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "filler" not in tables and "studies" in tables  # back to its last commit
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert optuna.load_study(study_name="s", storage=make_storage(url, mode="read")).study_name == "s"


@pytest.mark.parametrize("password", ["p@ss", "p@ss:w@rd", "@start", "end@"])
def test_a_raw_at_in_a_password_is_hidden_whole_and_refused(password):
    # SQLAlchemy reads user:p@ss@host as the password "p" at host "ss@host": "ss" was shown
    url = f"postgresql://me:{password}@127.0.0.1:1/db"
    assert secrets_of(url) == [password]
    assert redact(url) == "postgresql://me:***@127.0.0.1:1/db"
    assert password not in redact_text(f"nas-search --storage {url}", url)
    with pytest.raises(SettingError, match="written|as %40") as caught:
        make_storage(url)
    assert str(caught.value).startswith("storage: postgresql://me:***@127.0.0.1:1/db: its password holds a raw '@'")


def test_only_a_lock_every_user_sees_lets_a_beatless_trial_count_as_dead():
    """retry_stale_trials requeues a trial without a beat at once only where storage_lock is shared by
    every worker (a live worker holds it from ask to its first beat); elsewhere it waits STALE_SECONDS."""
    from nas.store.storage import shares_a_lock

    assert shares_a_lock("sqlite:///s.db") and shares_a_lock("postgresql+psycopg2://u@h/db")
    assert shares_a_lock("mysql://u@h/db")
    assert not shares_a_lock("mssql+pyodbc://u@h/db") and not shares_a_lock("oracle://u@h/db")
