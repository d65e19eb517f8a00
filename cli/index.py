"""`emoscope index rebuild` and `emoscope patterns`: the similarity index beside the store
built afresh, and the store's moments clustered into recurring patterns."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cli.common import app, fail_usage, require_db
from core.storage.store import DEFAULT_DB

index_app = typer.Typer(no_args_is_help=True,
                        help="The similarity (ANN) index kept beside the database.")
app.add_typer(index_app, name="index")


@index_app.command("rebuild")
def rebuild(db: Path = typer.Option(DEFAULT_DB, help="DuckDB file whose index to rebuild.")
            ) -> None:
    """Build every (model, embedding size) index of the store afresh from its rows. Writers
    keep it up to date after each commit, and a missing, stale or corrupt one is rebuilt when
    next opened; this does it now (e.g. after restoring a backup)."""
    import time

    from core.index import segment_index
    from core.storage.store import Store
    require_db(db)
    store = Store(db)
    store.migrate()
    found = segment_index.spaces(store)
    if not found:
        typer.echo(f"{db}: no stored segment has an embedding; nothing to index")
        return
    for space in found:
        t0 = time.perf_counter()
        try:
            ix = segment_index.rebuild(store, space)
        except RuntimeError as e:  # another process is writing this index right now
            fail_usage(str(e))
        size = sum(f.stat().st_size for f in ix.path.parent.glob(f"{ix.path.stem}.*")
                   if f.is_file())
        typer.echo(f"{space.model} ({space.dim}-d): {len(ix):,} segments in "
                   f"{time.perf_counter() - t0:.1f} s, {size / 2**20:.1f} MiB at {ix.path}")


@app.command("patterns")
def patterns_cmd(
    db: Path = typer.Option(DEFAULT_DB, help="DuckDB file to cluster and write to."),
    k: Optional[int] = typer.Option(None, "--k", min=1, max=200,
                                    help="How many patterns (default: chosen by the "
                                         "silhouette among 4-32)."),
    seed: int = typer.Option(0, help="Seed of the sample and of k-means (same seed, same "
                                     "patterns)."),
) -> None:
    """Cluster the stored moments into recurring patterns and store them (tables `patterns`
    and `segment_patterns`, each row with the run that made it); the Patterns page shows the
    latest run."""
    from core.index import pattern_runs
    from core.storage.store import Store
    require_db(db)
    store = Store(db)
    store.migrate()
    try:
        run = pattern_runs.compute(store, k, seed)
    except ValueError as e:
        fail_usage(str(e))
    typer.echo(f"{run.run_id}: {run.segments:,} moments of {run.model} in {run.k} patterns "
               f"({run.seconds:.1f} s); sizes {', '.join(f'{n:,}' for n in run.sizes)}")
