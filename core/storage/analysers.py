"""Analysers: what runs on a segment's audio (and later on its text), and the one registry.

An analyser is a class registered with `@register_analyser`, with a small frozen config
dataclass (lhotse's `@register_extractor` pattern). It is given the speech segments of a
stretch of audio as `Span`s — the samples, the sample rate, the times, and what the analysers
before it found (the emotion model's `Output` under "emotion") — and answers one `Found` per
span: values for its typed columns on `segments`, and/or rows of tables of its own (a
speech-to-text analyser: utterances and words). Everything after the model takes analysers
from here, so a new one is a module, a registration and a migration:

* `ingest/assemble.analysed` runs them on every part, in every path (serial, streaming, Ray,
  the live stream's final assembly); `assemble` puts their values on `Segment.values` and
  their rows, keyed to the session and segment, in `SessionResult.analyses`;
* `core/storage/sessions.SessionWriter` writes the columns with the segments and the rows into their
  tables (replaced with the session, erased with it: `session_tables()`);
* `core/intake/shards` carries both in Parquet; `Reader.segments` returns the columns and
  `Reader.analysis_rows` the rows (through the scope check); the API shows both.

The emotion model is the first analyser. It is run by the executors' model stage
(`ingest.assemble.run_model`: batches across files at the engine's budget, or the API's
batcher) rather than by `run`, and stored in the segment's fixed columns (label, confidence,
scores, embedding) and the frames table.

A module that registers analysers must be importable without torch or a model (load those in
`load()`, which runs once per process before the first `analyse`): the Ray executor imports the
modules named by `modules()` in its workers, and the store's readers import them to learn the
columns and tables. A batch may hold any spans of one file (a whole part on the serial and
streaming paths, whatever a model batch held on Ray), so an analyser's answer for a span must
not depend on which other spans share its call.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from core.analysis import quality

# Every analyser table has these before its own columns; the writer fills them.
KEY_COLUMNS = (("session_id", "VARCHAR"), ("segment_id", "VARCHAR"), ("channel", "INTEGER"),
               ("n", "INTEGER"))


@dataclass(frozen=True)
class Column:
    """One typed value an analyser stores: on `segments`, or in a table of its own."""
    name: str
    sql: str  # its DuckDB type, as the migration creates it
    arrow: pa.DataType  # its type in Arrow (the writer's bulk insert, Parquet shards)


@dataclass(frozen=True)
class Table:
    """Rows of an analyser's own: KEY_COLUMNS, then `columns` (times in session seconds)."""
    name: str
    columns: tuple[Column, ...]


@dataclass
class Span:
    """One speech segment as an analyser sees it."""
    channel: int
    start_s: float  # seconds from the start of the session
    end_s: float
    wave: np.ndarray  # float32 mono samples at `rate`
    rate: int
    found: dict[str, Any] = field(default_factory=dict)  # analyser name → its answer here


@dataclass
class Found:
    """An analyser's answer for one span: column values, rows of its tables, and anything
    else its `finish` turns into the session's own fields (`more`)."""
    values: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, list[dict]] = field(default_factory=dict)  # table name → rows
    more: Any = None
    by: dict[str, "Found"] = field(default_factory=dict)  # merged: each analyser's own answer


@dataclass(frozen=True)
class NoConfig:
    pass


class Analyser:
    """Subclass, set the class attributes, implement `analyse`, decorate with
    `@register_analyser`."""
    name: ClassVar[str]
    Config: ClassVar[type] = NoConfig  # a frozen dataclass; [analysers.NAME] in emoscope.toml
    columns: ClassVar[tuple[Column, ...]] = ()  # on segments
    tables: ClassVar[tuple[Table, ...]] = ()  # of its own
    needs: ClassVar[tuple[str, ...]] = ()  # analysers whose answers it reads (run before it)
    model_stage: ClassVar[bool] = False  # run by the executors' model stage, not by `run`
    # (name, SQL) applied by Store.migrate after core's own, once each; name them
    # "<analyser>_0001", ... and append only, as core/storage/migrations.py.
    migrations: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()
        self._loaded = False

    def load(self) -> None:
        """Load models or other heavy things (once per process, before the first call)."""

    def analyse(self, spans: list[Span]) -> list[Found]:
        """One Found per Span. Every registered analyser defines it, except the emotion model
        (`model_stage`), which run_model and the batcher call directly."""
        raise NotImplementedError(f"{type(self).__name__} must define analyse()")

    @classmethod
    def finish(cls, result, answers: list) -> Any:
        """At assembly, once per session: `result` (a SessionResult with its segments) and
        `answers`, (Segment, this analyser's Found) in segment order → the SessionResult,
        e.g. with `dataclasses.replace(result, utterances=...)` for what core stores in typed
        tables of its own (utterances, words, audio events). Runs where the session is
        assembled (on Ray, not where `analyse` ran): no `load()`, no instance state."""
        return result


_REGISTRY: dict[str, type[Analyser]] = {}
_CONFIG: dict[str, dict] = {}  # name → config fields, from emoscope.toml or `configure`
_INSTANCES: dict[str, Analyser] = {}


def register_analyser(cls: type[Analyser]) -> type[Analyser]:
    """Class decorator: `cls` runs after those registered before it."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__qualname__} needs a name")
    for need in cls.needs:
        if need not in _REGISTRY:
            raise ValueError(f"analyser {name!r} needs {need!r}, which is not registered "
                             "before it")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"an analyser named {name!r} is already registered "
                         f"({_REGISTRY[name].__module__})")
    taken = {c.name for a in _REGISTRY.values() if a is not cls for c in a.columns}
    clash = taken & {c.name for c in cls.columns}
    if clash:
        raise ValueError(f"analyser {name!r}: column(s) {sorted(clash)} belong to another")
    _REGISTRY[name] = cls
    _INSTANCES.pop(name, None)
    return cls


def unregister(name: str) -> None:
    """Forget an analyser (tests register toy ones for a while)."""
    _REGISTRY.pop(name, None)
    _INSTANCES.pop(name, None)


def registered() -> list[type[Analyser]]:
    """Every analyser, in the order they run."""
    return list(_REGISTRY.values())


def get(name: str) -> type[Analyser]:
    return _REGISTRY[name]


def segment_columns() -> list[Column]:
    """Columns analysers add to `segments`, in registration order."""
    return [c for a in _REGISTRY.values() for c in a.columns if not a.model_stage]


def tables() -> list[Table]:
    return [t for a in _REGISTRY.values() for t in a.tables]


def table_schema(t: Table) -> pa.Schema:
    keys = [("session_id", pa.string()), ("segment_id", pa.string()), ("channel", pa.int32()),
            ("n", pa.int32())]
    return pa.schema(keys + [(c.name, c.arrow) for c in t.columns])


def create_table(t: Table) -> str:
    """The DDL of an analyser table, for its migration."""
    cols = [f"{n} {sql}" for n, sql in KEY_COLUMNS] + [f"{c.name} {c.sql}" for c in t.columns]
    return (f"CREATE TABLE {t.name} ({', '.join(cols)});\n"
            f"CREATE INDEX {t.name}_session ON {t.name}(session_id);")


def migrations() -> list[tuple[str, str]]:
    """Every registered analyser's migrations, in registration order."""
    return [m for a in _REGISTRY.values() for m in a.migrations]


def modules() -> list[str]:
    """The modules the registered analysers live in, for processes that must import them."""
    return list(dict.fromkeys(a.__module__ for a in _REGISTRY.values()))


def use(names) -> None:
    """Import analyser modules by dotted name ([analysers] modules in emoscope.toml; the Ray
    executor's workers): each registers what it holds."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ValueError(f"analyser module {name!r} cannot be imported: {e}") from None


def configure(configs: dict[str, dict]) -> None:
    """Config fields per analyser name ([analysers.NAME] in emoscope.toml)."""
    for name, values in configs.items():
        _CONFIG[name] = dict(values)
        _INSTANCES.pop(name, None)


def from_config(section: dict) -> None:
    """[analysers] of emoscope.toml: `modules = ["pkg.module", ...]` to import, and one
    `[analysers.NAME]` table of config fields per analyser."""
    if not isinstance(section, dict):
        raise ValueError("[analysers] must be a table")
    names = section.get("modules", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("[analysers] modules is a list of module names")
    use(names)
    configure({k: v for k, v in section.items() if isinstance(v, dict)})


def state() -> tuple[list[str], dict[str, dict]]:
    """What another process needs to hold the same analysers: `restore(*state())` there."""
    return modules(), {k: dict(v) for k, v in _CONFIG.items()}


def restore(names: list[str], configs: dict[str, dict]) -> None:
    use(names)
    configure(configs)


def instance(name: str) -> Analyser:
    """This process's analyser `name`, configured and loaded (once)."""
    a = _INSTANCES.get(name)
    if a is None:
        cls = _REGISTRY[name]
        raw = _CONFIG.get(name, {})
        known = {f.name for f in fields(cls.Config)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"[analysers.{name}] has unknown setting(s) {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        a = _INSTANCES[name] = cls(cls.Config(**raw))
    if not a._loaded:
        a.load()
        a._loaded = True
    return a


def run(spans: list[Span]) -> list[Found]:
    """Every registered analyser after the model stage over `spans`, in order, each seeing the
    answers before it in `span.found`; one merged Found per span."""
    merged = [Found() for _ in spans]
    if not spans:
        return merged
    for cls in _REGISTRY.values():
        if cls.model_stage:
            continue
        answers = instance(cls.name).analyse(spans)
        if len(answers) != len(spans):
            raise ValueError(f"analyser {cls.name!r} answered {len(answers)} of "
                             f"{len(spans)} segments")
        own = {t.name for t in cls.tables}
        for span, found, into in zip(spans, answers, merged):
            span.found[cls.name] = found
            into.by[cls.name] = found
            into.values.update(found.values)
            for table, rows in found.rows.items():
                if table not in own:
                    raise ValueError(f"analyser {cls.name!r} wrote rows of {table!r}, not "
                                     "a table of its own")
                into.rows.setdefault(table, []).extend(rows)
    return merged


def finish(result, answers: list) -> Any:
    """Every analyser's `finish` over an assembled session; `answers`: (Segment, merged
    Found) per segment."""
    for cls in _REGISTRY.values():
        if cls.model_stage or cls.finish.__func__ is Analyser.finish.__func__:
            continue
        result = cls.finish(result, [(seg, f.by.get(cls.name)) for seg, f in answers])
    # Where transcripts enter a session: nothing said is kept before it is redacted.
    # Sentiment is judged on the text as stored, after redaction.
    from core.text.redaction import redact_result
    from core.text.sentiment import score_result
    return score_result(redact_result(result))


@register_analyser
class Emotion(Analyser):
    """emotion2vec+ (ingest/model): 9 scores, an embedding and frame logits per segment. Run
    by the model stage; later analysers read its `Output` as `span.found["emotion"]`."""
    name = "emotion"
    model_stage = True
    columns = (Column("label", "VARCHAR", pa.string()),
               Column("confidence", "DOUBLE", pa.float64()),
               Column("scores", "FLOAT[9]", pa.list_(pa.float32(), 9)),
               Column("embedding", "FLOAT[]", pa.list_(pa.float32())))


@register_analyser
class Bandwidth(Analyser):
    """Effective bandwidth of each segment's speech (core/analysis/quality), and the `narrowband` flag on
    the channels whose pooled speech (or whose source rate, 8 kHz or below) is band-limited, and
    on their segments: the model is known to be less reliable on telephone audio."""
    name = "bandwidth"
    columns = (Column("bandwidth_hz", "DOUBLE", pa.float64()),)
    migrations = (("bandwidth_0001", "ALTER TABLE segments ADD COLUMN bandwidth_hz DOUBLE;"),)

    def analyse(self, spans: list[Span]) -> list[Found]:
        out = []
        for s in spans:
            bands = quality.band_energy(s.wave, s.rate)
            out.append(Found(values={"bandwidth_hz": quality.effective_bandwidth(bands)},
                             more=bands.tolist()))
        return out

    @classmethod
    def finish(cls, result, answers: list) -> Any:
        from dataclasses import replace
        pooled: dict[int, np.ndarray] = {}
        for seg, found in answers:
            if found is not None and found.more:
                e = np.asarray(found.more, dtype=np.float64)
                pooled[seg.channel] = pooled.get(seg.channel, 0) + e
        # A channel without speech is judged by the session's speech: one recording chain.
        whole = sum(pooled.values()) if pooled else None
        narrow = {c.channel for c in result.channels
                  if quality.is_narrowband(result.sample_rate, quality.effective_bandwidth(
                      pooled.get(c.channel, whole)) if pooled else None)}
        if not narrow:
            return result
        mark = lambda flags: tuple(flags) + (("narrowband",) if "narrowband" not in flags else ())
        return replace(
            result,
            channels=tuple(replace(c, flags=mark(c.flags)) if c.channel in narrow else c
                           for c in result.channels),
            segments=tuple(replace(s, flags=mark(s.flags)) if s.channel in narrow else s
                           for s in result.segments))
