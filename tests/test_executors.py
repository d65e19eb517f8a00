"""The executors registry: what `emoscope ingest --executor` offers and runs, read from one
place (ingest/executors.py)."""
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.main import app
from core.guard.access import operator
from core.storage.queries import Reader
from core.storage.store import Store
from ingest import executors
from ingest.pipeline import ingest_paths, run_serial
from tests.audio_gen import write

runner = CliRunner()


@pytest.fixture
def toy():
    """An executor registered for the test: the serial one, noting which files it was given."""
    seen = []

    @executors.register_executor("toy", "the serial executor, watched")
    def run(batch: executors.Batch) -> None:
        seen.extend(p.name for p in batch.files)
        run_serial(batch)

    yield seen
    executors.unregister_executor("toy")


def test_a_registered_executor_runs_emoscope_ingest(toy, tmp_path, speech, model, monkeypatch):
    monkeypatch.setattr("cli.analyse.load_model", lambda *a, **k: model)  # the session's
    write(tmp_path / "a.wav", speech)
    db = tmp_path / "e.duckdb"
    res = runner.invoke(app, ["ingest", str(tmp_path / "a.wav"), "--db", str(db), "--model",
                              "tiny-random", "--device", "cpu", "--engine", "reference",
                              "--executor", "toy"])
    assert res.exit_code == 0, res.output
    assert toy == ["a.wav"]
    r = Reader(Store(db), operator())
    assert r.session_rows().status.tolist() == ["ok"]
    assert '"executor": "toy"' in r.runs().options[0]


def test_an_unknown_executor_gets_one_line_naming_the_choices(toy, tmp_path):
    res = runner.invoke(app, ["ingest", str(tmp_path), "--executor", "nope"])
    assert res.exit_code == 2
    assert res.output.strip() == ("error: --executor must be streaming, serial, ray or toy, "
                                  "not 'nope'")
    with pytest.raises(ValueError, match="streaming, serial, ray or toy, not 'nope'"):
        ingest_paths([tmp_path], None, None, executor="nope")
    # Ray runs a whole ingest of its own, never inside ingest_paths.
    with pytest.raises(ValueError, match="emoscope ingest --executor ray"):
        ingest_paths([tmp_path], None, None, executor="ray")


def test_an_option_of_another_executor_is_refused(tmp_path):
    res = runner.invoke(app, ["ingest", str(tmp_path), "--address", "auto"])
    assert res.exit_code == 2
    assert "--address, --shards and --no-import go with --executor ray" in res.output


def test_ray_is_listed_without_importing_ray():
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from ingest import executors as e; "
         "print(e.get('ray').here, e.get('ray').options, 'ray' in sys.modules)"],
        capture_output=True, text=True, check=True).stdout.split(None, 1)
    assert out[0] == "False" and out[1].strip() == "('address', 'shards', 'no_import') False"
