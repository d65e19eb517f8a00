"""The Typer app and what its commands share: usage errors, model loading, the rules."""
from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Emotion timelines for recorded conversations.")

UNTRAINED_NOTE = "untrained test model: its labels mean nothing"


def fail_usage(message: str) -> None:
    """Exit 2 with one line on stderr: the contract for usage errors."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def load_model(model: str, device: str, warm: bool = False):
    from ingest.model import ModelUnavailable, load
    try:
        lm = load(model, device)
    except ModelUnavailable as e:
        fail_usage(str(e))
    if warm:  # warm the batched engine at load (seed §5.1), not on the first real batch
        from ingest.engine import warm_up
        warm_up(lm)
    return lm


def asr_option():
    """--asr: the speech-to-text backend; $EMOSCOPE_ASR, else auto (SenseVoice where its
    weights are on disk, else pocketsphinx, else none)."""
    import os
    return typer.Option(os.environ.get("EMOSCOPE_ASR", "auto"), "--asr",
                        help="Speech-to-text: auto, pocketsphinx, sensevoice[:DIR], "
                             "whisper[:MODEL] or none.")


def check_asr(spec: str) -> str | None:
    """Load the speech-to-text backend now (exit 2, one line, when it cannot be had); its
    name, or None for none."""
    from ingest.speech_to_text import AsrUnavailable, use
    try:
        name = use(spec)
    except AsrUnavailable as e:
        fail_usage(f"--asr {spec}: {e}")
    typer.secho(f"speech-to-text: {name or 'none'}", err=True)
    return name


def note_untrained(lm) -> None:
    if not lm.trained:
        typer.secho(f"note: {lm.name} is an {UNTRAINED_NOTE}", fg="yellow", err=True)


def load_rules_or_exit(path: Path | None = None):
    """The analytics rules (emoscope.toml over the defaults); a broken file stops here,
    before any audio is read."""
    from core.analysis.rules import RulesError, load_rules
    try:
        return load_rules(path)
    except RulesError as e:
        fail_usage(str(e))


def load_settings_or_exit():
    """[access], [auth], [retention] and [storage] of emoscope.toml; a broken one stops here."""
    from core.admin.settings import SettingsError, load_settings
    try:
        return load_settings()
    except SettingsError as e:
        fail_usage(str(e))


def writer_for(db: Path, rules=None):
    from core.storage.sessions import SessionWriter
    from core.storage.store import Store
    return SessionWriter(Store(db), rules if rules is not None else load_rules_or_exit(),
                         load_settings_or_exit().audio_root)


def viewer_as(identity: str | None):
    """Whom a command reads for: the machine's operator (who can read the file anyway), or
    with `--as EMAIL` the scope emoscope.toml grants that e-mail."""
    from core.guard.access import operator
    if identity is None:
        return operator()
    viewer = load_settings_or_exit().access.viewer_for_email(identity)
    if not viewer.roles:
        fail_usage(f"{identity} has no role in the [access] grants of emoscope.toml")
    return viewer


def require_db(db: Path) -> None:
    if not db.exists():
        fail_usage(f"no database at {db}; ingest some audio first")
