"""Bad input to every command: one line naming what is wrong, exit 2, no traceback, nothing damaged.

The commands run in this process (their entry points), so a case that escaped as an exception
fails the test exactly as a traceback would show; each case is bounded in memory and time by the
checks it exercises (a failing check would allocate or run long, and the suite would show it).
"""

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from nas.cli import bench, export, report, search, show, train

from conftest import REPO_SPACE, write_mnist

PASSWORD = "hunter2"
# The cases share one world and one tiny study, built once per test process: keep them in one process.
pytestmark = pytest.mark.xdist_group("bad-input")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Files the cases point at: specs, spaces, a study with trials, data folders, a file in the way."""
    w = tmp_path_factory.mktemp("bad")
    (w / "file").write_text("not a folder")
    spec = {"arch": {"layers": [{"op": "conv", "out": 16}, {"op": "relu"}, {"op": "gap"}, {"op": "conv", "out": 10, "k": 1}]}}
    (w / "ok.json").write_text(json.dumps(spec))
    huge = json.loads(json.dumps(spec))
    huge["arch"]["layers"][0]["out"] = 10**9
    (w / "huge-channels.json").write_text(json.dumps(huge))
    (w / "huge-input.json").write_text(json.dumps({**spec, "arch": {**spec["arch"], "in_size": 100000}}))
    (w / "wide-input.json").write_text(json.dumps({**spec, "arch": {**spec["arch"], "in_size": 1024}}))
    (w / "rgb.json").write_text(json.dumps({**spec, "arch": {**spec["arch"], "in_channels": 3}}))
    (w / "classes.json").write_text(json.dumps({**spec, "arch": {**spec["arch"], "classes": 7,
                                                                 "layers": [*spec["arch"]["layers"][:3],
                                                                            {"op": "conv", "out": 7, "k": 1}]}}))
    (w / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    (w / "infinity.json").write_text(json.dumps(spec).replace('"out": 16', '"out": 16, "k": 3') .replace(
        '{"op": "relu"}', '{"op": "dropout", "p": Infinity}'))
    (w / "binary.json").write_bytes(os.urandom(2000) + b"\xff\xfe")
    (w / "big.json").write_text(" " * 2_000_000 + json.dumps(spec))
    (w / "recipe.json").write_text(json.dumps({**spec, "recipe": {"lr": -1}}))
    space = REPO_SPACE.read_text()
    (w / "strings.yaml").write_text(space.replace("channels: {low: 4, high: 32, step: 4}",
                                                  "channels: {choices: [a, b]}"))
    (w / "bomb.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(20)))
    (w / "notyaml.yaml").write_text("arch: [unclosed")
    (w / "deep.yaml").write_text("arch: " + "[" * 60_000 + "]" * 60_000)  # 120 KB, under the size limit
    os.mkfifo(w / "fifo.json")  # opening it for reading would wait forever for a writer
    (w / "empty.db").write_bytes(b"")
    import sqlite3

    with sqlite3.connect(w / "foreign.db") as db:  # another program's database
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    (w / "notes.html").write_text("<html>my own page</html>")
    gzbomb = write_mnist(w / "gzbomb")
    with gzip.open(gzbomb / "train-images-idx3-ubyte.gz", "wb") as f:  # a valid header, then far too much
        f.write((2051).to_bytes(4, "big") + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        chunk = bytes(1 << 20)
        for _ in range(50):  # 52 MB, past the 47,040,000 bytes the header promises
            f.write(chunk)
    # Issue 27's cases: files that look like the tool's own, a pipe, odd spec names, data that breaks its contract.
    (w / "marked.html").write_text("<html><title>nas-report: my notes quoting its marker</title></html>")
    (w / "mine.csv").write_text("study,rung,number\nmy,own,rows\n")
    os.mkfifo(w / "pipe")  # opening it to write (or to read its head) would wait forever
    for name in (".best.old-2024", ".best.12345.backup"):  # named like an export's staging folders: the user's
        (w / name).mkdir()
        (w / name / "mine.txt").write_text("precious")
    for name, value in (("named", {"a": 1}), ("ansi-name", "a\x1b[31mb")):
        (w / f"{name}.json").write_text(json.dumps({**spec, "name": value}))
    (w / "dup.json").write_text(json.dumps(spec)[:-1] + ', "arch": {"layers": []}}')
    overflow = write_mnist(w / "overflow")  # dims multiplying to 2**64 - 2 (int64 wraps to -2), then a little data
    (overflow / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (129794, 31252369, 4547599)) + bytes(1000)))
    for name, description in (("md5-string", {"name": "letters", "md5": "abc"}), ("std-zero", {"std": 0}),
                              ("classes-string", {"classes": "10"})):
        (write_mnist(w / name) / "dataset.json").write_text(json.dumps(description))
    no_test = write_mnist(w / "no-test")  # no test images, nor labels
    (no_test / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        (2051).to_bytes(4, "big") + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2))
    (no_test / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress((2049).to_bytes(4, "big") + (0).to_bytes(4, "big")))
    zero_size = write_mnist(w / "zero-size")  # 0x0 images in both splits
    for split, n in (("train", 1000), ("t10k", 300)):
        (zero_size / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
            (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (0).to_bytes(4, "big") * 2))
    return w


def run(argv, capsys):
    name, args = argv[0], argv[1:]
    entry = {"nas-show": show.main, "nas-train": train.main, "nas-bench": bench.main, "nas-search": search.main,
             "nas-export": export.main, "nas-report": report.main}[name]
    with pytest.raises(SystemExit) as exit_info:
        entry(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


W = "{w}"  # placeholder for the world folder
CASES = [
    # nas-show
    ("nas-show --preset ref-1", "unknown preset 'ref-1'"),
    ("nas-show --spec {w}/missing.json", "cannot read spec file"),
    ("nas-show --spec {w}/huge-channels.json", "channel count must be an integer from 1 to 4096"),
    ("nas-show --spec {w}/huge-input.json", "in_size must be an integer from 1 to 1024"),
    ("nas-show --spec {w}/wide-input.json", "this tool builds at most"),
    ("nas-show --spec {w}/nested.json", "nested too deeply"),
    ("nas-show --spec {w}/infinity.json", "Infinity is not a number a spec can hold"),
    ("nas-show --spec {w}/binary.json", "not a text (UTF-8) JSON file"),
    ("nas-show --spec {w}/big.json", "larger than 1000 KB"),
    ("nas-show --spec {w}/recipe.json", "lr must be > 0"),
    ("nas-show --spec {w}", "cannot read spec file"),
    ("nas-show --space {w}/strings.yaml", "channels: values must be whole numbers, got 'a'"),
    ("nas-show --space {w}/bomb.yaml", "anchors and aliases"),
    ("nas-show --space {w}/notyaml.yaml", "not valid YAML"),
    ("nas-show --space {w}/missing.yaml", "cannot read search space"),
    ("nas-show --space mnist_20k --sample -1", "--sample must be between 1 and 100000"),
    ("nas-show --space mnist_20k --sample 1000000000", "--sample must be between 1 and 100000"),
    ("nas-show --space mnist_20k --budget 0", "--budget must be at least 1"),
    ("nas-show --bogus", "unrecognized arguments: --bogus"),
    ("nas-show --spec /dev/zero", "not a regular file"),
    ("nas-show --spec {w}/fifo.json", "not a regular file"),
    ("nas-show --space {w}/deep.yaml", "nested too deeply (more than 50 levels)"),
    ("nas-show --space mnist_20k --seed 99999999999999999999", "--seed must be at least 0"),
    ("nas-show", "give one of --preset NAME, --spec FILE, --list or --space FILE"),
    # nas-train
    ("nas-train --preset ref-10066 --data-dir {w}/nowhere", "--data-dir: data folder"),
    ("nas-train --preset ref-10066 --data-dir {w}/gzbomb", "truncated or padded (47,040,017+ bytes"),
    ("nas-train --preset ref-10066 --data-dir {w}/file", "does not exist"),
    ("nas-train --preset ref-10066 --epochs 0", "--epochs must be between 1 and 1000"),
    ("nas-train --preset ref-10066 --epochs 1000000000", "--epochs must be between 1 and 1000"),
    ("nas-train --preset ref-10066 --epochs abc", "invalid int value: 'abc'"),
    ("nas-train --preset ref-10066 --seeds a,b", "--seeds takes seeds separated by commas"),
    ("nas-train --preset ref-10066 --seeds 0,0", "--seeds takes 1 to 100 different seeds"),
    ("nas-train --preset ref-10066 --seeds 1,,2", "--seeds takes seeds separated by commas"),
    ("nas-train --preset ref-10066 --seed 99999999999999999999", "--seed must be at least 0"),
    ("nas-train --trial best --storage sqlite:///{w}/empty.db", "is empty, not the studies of a search"),
    ("nas-train --preset ref-10066 --seed -1", "--seed must be at least 0"),
    ("nas-train --preset ref-10066 --lr nan", "lr must be > 0"),
    ("nas-train --preset ref-10066 --batch-size 1000000000", "batch_size must be an integer from 1 to 4096"),
    ("nas-train --preset ref-10066 --precision fp8", "precision must be one of auto, fp32, bf16, fp16"),
    ("nas-train --preset ref-10066 --precision fp16 --device cpu", "--precision: fp16 (with a gradient scaler) is for CUDA"),
    ("nas-train --spec {w}/rgb.json --data-dir {mnist}", "MNIST images are 1-channel 28x28"),
    ("nas-train --spec {w}/classes.json --data-dir {mnist}", "scores 7 classes, but MNIST images are 1-channel 28x28 with 10"),
    ("nas-train --trial best --storage sqlite:///{w}/typo.db", "no database at"),
    ("nas-train --trial abc --storage sqlite:///{study_db}", "must be a trial number or 'best'"),
    ("nas-train --trial 999 --storage sqlite:///{study_db}", "has no trial 999"),
    ("nas-train --preset ref-10066 --device cuda:7", "cuda"),
    # nas-bench
    ("nas-bench --spec {w}/huge-channels.json --data-dir {mnist}", "channel count must be"),
    ("nas-bench --subset 0 --data-dir {mnist}", "--subset: must be between 1"),
    # nas-search
    ("nas-search --timeout nan", "--timeout: must be a number of seconds"),
    ("nas-search --timeout -5", "--timeout: must be a number of seconds"),
    ("nas-search --hours 0", "--hours must be between 0 and 720"),
    ("nas-search --timeout 5 --hours 1", "give one of --timeout SECONDS, --minutes M or --hours H, not"),
    ("nas-search --minutes 0", "--minutes must be between 0 and 43,200"),
    # --epochs fixes the fidelity: a time flag alone is fitted with a smaller one where the machine allows
    ("nas-search --minutes 0.2 --epochs 19 --storage sqlite:///{w}/short.db --data-dir {mnist}",
     "--minutes 0.2 cannot hold even one full-fidelity candidate"),
    ("nas-search --top -1", "--top must be at least 0"),
    ("nas-search --study ''", "--study: must be a non-empty printable name"),
    ("nas-search --study $'a\\x1b[31mb'", "--study: must be a non-empty printable name"),
    ("nas-search --seed -1 --storage sqlite:///{w}/seed.db", "--seed: must be an integer between 0"),
    ("nas-search --budget 100 --storage sqlite:///{w}/budget.db --data-dir {mnist}", "--budget: none of 300 random"),
    ("nas-search --rungs 2xx", "--rungs: a rung is EPOCHS or EPOCHSxIMAGES"),
    ("nas-search --rungs 20", "--rungs: rung 20 costs no less than the next"),
    ("nas-search --objectives accuracy,speed", "--objectives: must be accuracy"),
    ("nas-search --jobs 0", "--jobs: must be an integer between 1 and 64"),
    ("nas-search --jobs many", "invalid value 'many': a number of workers, or auto"),
    ("nas-search --promote 1", "--promote: must be an integer between 2 and 100"),
    ("nas-search --sampler cmaes", "invalid choice: 'cmaes'"),
    ("nas-search --storage sqlite:///{w}/file/s.db --data-dir {mnist}", "is a file, not a folder"),
    ("nas-search --storage sqlite:////proc/nas/s.db --data-dir {mnist}", "cannot create the folder"),
    ("nas-search --storage nosuchdb://x --data-dir {mnist}", "cannot open storage nosuchdb://x"),
    ("nas-search --storage postgresql://u:" + PASSWORD + "@127.0.0.1:1/db --data-dir {mnist}", "cannot open storage"),
    ("nas-search --space {w}/strings.yaml", "channels: values must be whole numbers"),
    ("nas-search --storage sqlite:///:memory: --data-dir {mnist}", "keeps nothing once the run ends"),
    ("nas-search --storage sqlite:///{w}/new.db --artifacts {w}/file --data-dir {mnist}", "is a file, not a folder"),
    ("nas-search --storage sqlite:///{w}/new.db --artifacts {mnist} --data-dir {mnist}", "--artifacts: "),
    ("nas-search --storage sqlite:///{w}/foreign.db --data-dir {mnist}", "holds other tables (notes)"),
    ("nas-search --storage sqlite:///{mnist}/train-labels-idx1-ubyte.gz --data-dir {mnist}", "not a SQLite database"),
    ("nas-search --seed 99999999999999999999 --storage sqlite:///{w}/seed.db", "--seed: must be an integer between 0"),
    ("nas-search --storage sqlite:///{study_db} --study t --budget 8000 --data-dir {mnist}",
     "--budget: study 't' was created with budget 15000, this run asks for 8000"),
    # nas-export
    ("nas-export --storage sqlite:///{study_db} --out {w}/file/best", "is a file, not a folder"),
    ("nas-export --storage sqlite:///{study_db} --out {w}/file", "is a file; the export is a folder"),
    ("nas-export --storage sqlite:///{study_db} --out {w}/full", "already exists and is not empty; pass --force"),
    ("nas-export --storage sqlite:///{w}/typo.db --out {w}/x", "no database at"),
    ("nas-export --storage sqlite:///{study_db} --study nope --out {w}/x", "no study 'nope'"),
    ("nas-export --storage sqlite:///{study_db} --trial {rejected} --out {w}/x", "was rejected"),
    ("nas-export --storage sqlite:///{study_db} --epochs 0 --out {w}/x --data-dir {mnist}", "--epochs must be between"),
    ("nas-export --preset ref-10066 --no-retrain --out {w}/x", "--no-retrain needs a trial of a search"),
    ("nas-export --storage sqlite:///{study_db} --no-retrain --epochs 2 --out {w}/x", "--epochs sets the retraining"),
    ("nas-export --storage postgresql://u:" + PASSWORD + "@127.0.0.1:1/db --out {w}/x", "cannot open storage"),
    ("nas-export --storage postgresql://u@127.0.0.1:1/db?password=" + PASSWORD + " --out {w}/x", "cannot open storage"),
    ("nas-export --storage sqlite:///{study_db} --trial 0 --no-retrain --out {artifacts} --force", "artifact store"),
    ("nas-export --storage sqlite:///{study_db} --no-retrain --out {study_db} --force", "study database"),
    ("nas-export --storage sqlite:///{study_db} --no-retrain --out {w}/full --force", "is not a folder nas-export wrote"),
    ("nas-export --storage sqlite:///{study_db} --no-retrain --out {w}/x.json", "looks like a file name"),
    ("nas-export --spec {w}/ok.json --out {w} --force", "around the spec file"),
    ("nas-export --preset ref-10066 --seed 99999999999999999999 --out {w}/y", "--seed must be at least 0"),
    # nas-report
    ("nas-report --storage sqlite:///{w}/typo.db", "no database at"),
    ("nas-report --storage sqlite:///{study_db} --out {w}", "is a folder; give a file name"),
    ("nas-report --storage sqlite:///{study_db} --top 0", "--top must be at least 1"),
    ("nas-report --storage sqlite:///{study_db} --out {study_db}", "is the study database"),
    ("nas-report --storage sqlite:///{study_db} --out {w}/r.html --csv {w}/r.html", "is also the --out of this command"),
    ("nas-report --storage sqlite:///{study_db} --out {w}/notes.html", "is not a file nas-report wrote"),
    ("nas-report --storage sqlite:///{w}/empty.db", "is empty, not the studies of a search"),
    ("nas-report --storage sqlite:///{w}/foreign.db", "holds other tables (notes)"),
    ("nas-report --storage sqlite:///{w}/ok.json", "is not a SQLite database"),
    ("nas-report --storage sqlite:///:memory:", "keeps nothing once the run ends"),
    # issue 27: nothing read from the wrong place, nothing deleted or written that was not asked for
    ("nas-report --storage sqlite:///{w}/run?3/s.db", "after '?' is not an option of SQLite's"),
    ("nas-export --storage sqlite:///{study_db} --trial 999 --out {w}/best", "has no trial 999"),
    ("nas-search --report {w}/out/r.html --export {w}/out --storage sqlite:///{w}/new.db --data-dir {mnist}",
     "--export: {w}/out holds the --report of this command"),
    ("nas-report --storage sqlite:///{study_db} --out {w}/marked.html", "is not a file nas-report wrote"),
    ("nas-report --storage sqlite:///{study_db} --out {w}/r.html --csv {w}/mine.csv", "--csv: {w}/mine.csv exists and "
     "is not a file nas-report wrote"),
    ("nas-report --storage sqlite:///{study_db} --out {w}/pipe", "not a regular file (a pipe"),
    ("nas-report --storage sqlite:///{study_db} --out {w}/r.html --front-csv {w}/pipe", "--front-csv: "),
    ("nas-search --report {w}/pipe --storage sqlite:///{w}/new.db --data-dir {mnist}", "--report: {w}/pipe is not a "
     "regular file"),
    ("nas-export --storage sqlite:///{study_db} --no-retrain --out {w}/pipe", "--out: {w}/pipe is a file"),
    ("nas-train --preset ref-10066 --data-dir {w}/overflow", "its header promises 18,446,744,073,709,551,614 bytes"),
    ("nas-train --preset ref-10066 --data-dir {w}/md5-string", "dataset.json: \"md5\" is 'abc'; it must be an object"),
    ("nas-train --preset ref-10066 --data-dir {w}/std-zero", "dataset.json: \"std\" is 0; it must be a finite number "
     "above 0"),
    ("nas-train --preset ref-10066 --data-dir {w}/classes-string", "dataset.json: \"classes\" is '10'; it must be a "
     "whole number"),
    ("nas-train --preset ref-10066 --data-dir {w}/no-test", "holds no images (shape (0, 28, 28)); both splits need"),
    ("nas-search --storage sqlite:///{w}/new.db --data-dir {w}/no-test", "holds no images"),
    ("nas-train --preset ref-10066 --data-dir {w}/zero-size", "its images are 1-channel 0x0"),
    ("nas-search --minutes 0.01 --epochs 19 --rungs none --storage sqlite:///{w}/short.db --data-dir {mnist}",
     "--minutes 0.01 cannot hold even one full-fidelity candidate"),
    ("nas-search --budgets 150,20000 --storage sqlite:///{w}/budget.db --data-dir {mnist}",
     "--budgets: none of 300 random candidates of space mnist_20k has fewer than 150"),
    ("nas-search --budgets 0", "--budgets: must be 1 to 10 increasing"),
    ("nas-search --budgets 2000,20000 --cost flops --objectives accuracy,params", "--cost and --objectives both"),
    ("nas-export --storage sqlite:///{study_db} --no-retrain --out ''", "--out: an empty path"),
    ("nas-report --storage sqlite:///{study_db} --csv ''", "--csv: an empty path"),
    ("nas-show --spec {w}/named.json", "name must be one line of printable text"),
    ("nas-show --spec {w}/ansi-name.json", "name must be one line of printable text"),
    ("nas-show --spec {w}/dup.json", "the key 'arch' is given twice"),
    ("nas-search --storage postgresql://u:" + PASSWORD + "@x@127.0.0.1:1/db --data-dir {mnist}",
     "its password holds a raw '@'"),
]


@pytest.fixture(scope="module")
def study_db(world, tiny_study):
    return tiny_study


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    from nas.search.settings import SearchConfig
    from nas.search.run import run_search

    tmp = tmp_path_factory.mktemp("study")
    db = tmp / "s.db"
    run_search(SearchConfig(storage=f"sqlite:///{db}", study="t", trials=2, device="cpu",
                            data_dir=str(write_mnist(tmp / "mnist")), verify_data=False,
                            settings=dict(epochs=1, rungs=(), holdout=200, subset=300, budget=15_000)))
    return db


@pytest.mark.parametrize("line, message", CASES)
def test_bad_input_is_one_line_and_exit_2(line, message, world, study_db, capsys, monkeypatch, real_mnist_dir):
    import shlex

    import optuna

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    full = world / "full"
    full.mkdir(exist_ok=True)
    (full / "keep.txt").write_text("precious")
    rejected = next((t.number for t in optuna.load_study(study_name="t", storage=f"sqlite:///{study_db}").trials
                     if t.user_attrs.get("outcome") == "rejected"), 0)
    before = checksums(study_db, world, real_mnist_dir)
    artifacts = study_db.with_suffix(".artifacts")
    text = line.format(w=world, mnist=real_mnist_dir, study_db=study_db, rejected=rejected, artifacts=artifacts)
    argv = shlex.split(text) if "$'" not in text else [*shlex.split(text.split(" $'")[0]), "a\x1b[31mb"]
    code, out, err = run(argv, capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, (err, out)
    assert len(lines) == 1 and "Traceback" not in err + out, err
    assert message.format(w=world) in lines[0], lines[0]
    assert lines[0].startswith(f"{argv[0]}: error: ")
    assert PASSWORD not in err + out
    assert (full / "keep.txt").read_text() == "precious" and sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    assert checksums(study_db, world, real_mnist_dir) == before  # the study, its weights, every file: byte-identical
    for name in ("typo.db", "seed.db", "budget.db", "seed.db.lock", "budget.db.lock", "new.db", "new.db.lock",
                 "r.html", "x.json", "y", "foreign.db.lock", "empty.db.lock", "short.db", "short.db.lock", "out",
                 "best", "run", "run?3"):
        assert not (world / name).exists(), name  # refused before any database is created
    assert not re.search(r"\x1b\[", err)  # escape sequences are not printed raw


def checksums(study_db, world, data):
    """sha256 of the study database, its artifact store and every file the cases point at; the real data
    files (tens of MB, read-only to every command) by size and modification time."""
    import hashlib

    files = [study_db, *study_db.with_suffix(".artifacts").rglob("*"), *world.rglob("*")]
    sums = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()}
    return sums | {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in data.iterdir()}


def test_there_are_at_least_forty_cases_across_the_commands():
    assert len(CASES) >= 40
    assert {line.split()[0] for line, _ in CASES} == {"nas-show", "nas-train", "nas-bench", "nas-search", "nas-export",
                                                       "nas-report"}
