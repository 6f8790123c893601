"""A password given in any form SQLAlchemy accepts appears in no output of any command, no stored
attribute of the study and no written file. On a real PostgreSQL database (trust authentication
accepts any password, so each form connects)."""

import sys

import pytest
import sqlalchemy

from nas.cli import export, report, search, train

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("postgresql")]  # one test process uses the server at a time

SECRET = "Pw-7k3y-s3cr3t"


def forms(url):
    """The same database, its password given as userinfo, as a query parameter and as a libpq DSN key."""
    u = sqlalchemy.engine.make_url(url)
    where = f"{u.host}:{u.port}/{u.database}"
    return {"userinfo": f"postgresql://{u.username}:{SECRET}@{where}",
            "query": f"postgresql://{u.username}@{where}?password={SECRET}",
            "dsn key": f"postgresql+psycopg://{u.username}@{where}?sslpassword={SECRET}"}


def run(entry, argv, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [entry.__module__, *argv])  # what a run records as its command
    try:
        code = entry(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out + err


def database_text(url):
    """Every value of every table of the database, as text."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as c:
        tables = sqlalchemy.inspect(engine).get_table_names()
        text = " ".join(str(row) for t in tables for row in c.execute(sqlalchemy.text(f'SELECT * FROM "{t}"')))
    engine.dispose()
    return text


def test_no_command_shows_stores_or_writes_a_password(pg_url, real_mnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    urls = forms(pg_url)
    common = ["--study", "s", "--data-dir", str(real_mnist_dir), "--device", "cpu"]
    tiny = ["--trials", "1", "--epochs", "1", "--rungs", "none", "--subset", "300", "--holdout", "500",
            "--no-references", "--artifacts", str(tmp_path / "weights")]
    for i, (form, url) in enumerate(urls.items()):
        steps = [(search.main, ["--storage", url, *common, *tiny, "--seed", str(i)]),
                 (report.main, ["--storage", url, "--study", "s", "--out", f"r{i}.html", "--csv", f"t{i}.csv"]),
                 (export.main, ["--storage", url.replace("127.0.0.1:5432", "127.0.0.1:1"), "--out", "x"])]
        if i == 0:  # the model files and a retraining write-back, once: their URLs pass through the same redact()
            steps[2:2] = [(export.main, ["--storage", url, *common, "--no-retrain", "--out", "best",
                                         "--artifacts", str(tmp_path / "weights")]),
                          (train.main, ["--storage", url, *common, "--trial", "best", "--epochs", "1", "--subset",
                                        "300"])]
        for entry, argv in steps:
            code, said = run(entry, argv, capsys, monkeypatch)
            assert SECRET not in said, (form, entry.__module__, said)
            assert code == (2 if "127.0.0.1:1" in " ".join(argv) else 0), (form, entry.__module__, said)
        assert "***" in said  # the failed export names the URL, its secret hidden
    stored = database_text(pg_url)
    assert "nas-search" in stored and SECRET not in stored  # run records, attributes, notes: none holds it
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 3 * 2 + 6  # the reports, the CSVs and the export folder's files
    assert [p for p in written if SECRET.encode() in p.read_bytes()] == []
