"""Numbered schema migrations. Append only: a released migration is never edited."""
from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = [
    ("0001_initial", """
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    model VARCHAR NOT NULL,
    model_path VARCHAR,
    trained BOOLEAN NOT NULL,
    device VARCHAR NOT NULL,
    engine VARCHAR,
    options JSON,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    n_ok INTEGER DEFAULT 0,
    n_failed INTEGER DEFAULT 0,
    n_skipped INTEGER DEFAULT 0,
    audio_s DOUBLE DEFAULT 0
);
CREATE TABLE sessions (
    session_id VARCHAR PRIMARY KEY,
    source_path VARCHAR NOT NULL,
    file_name VARCHAR NOT NULL,
    sha256 VARCHAR NOT NULL,
    duration_s DOUBLE,
    n_channels INTEGER,
    codec VARCHAR,
    sample_rate INTEGER,
    status VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    error VARCHAR,
    agent_id VARCHAR,
    customer_id VARCHAR,
    team VARCHAR,
    recorded_at TIMESTAMP,
    tags VARCHAR[],
    run_id VARCHAR,
    ingested_at TIMESTAMP NOT NULL
);
CREATE INDEX sessions_sha ON sessions(sha256);
CREATE TABLE channels (
    session_id VARCHAR NOT NULL,
    channel INTEGER NOT NULL,
    speaker VARCHAR NOT NULL,
    duration_s DOUBLE,
    rms DOUBLE,
    clip_ratio DOUBLE,
    speech_s DOUBLE,
    flags VARCHAR[],
    PRIMARY KEY (session_id, channel)
);
CREATE TABLE segments (
    segment_id VARCHAR PRIMARY KEY,
    session_id VARCHAR NOT NULL,
    channel INTEGER NOT NULL,
    speaker VARCHAR NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    label VARCHAR NOT NULL,
    confidence DOUBLE NOT NULL,
    scores FLOAT[9] NOT NULL,
    embedding FLOAT[],
    rms DOUBLE,
    clip_ratio DOUBLE,
    flags VARCHAR[],
    fallback_action VARCHAR
);
CREATE INDEX segments_session ON segments(session_id);
CREATE TABLE frames (
    session_id VARCHAR NOT NULL,
    channel INTEGER NOT NULL,
    t_s DOUBLE NOT NULL,
    angry FLOAT, disgusted FLOAT, fearful FLOAT, happy FLOAT, neutral FLOAT,
    other FLOAT, sad FLOAT, surprised FLOAT, unknown FLOAT
);
CREATE INDEX frames_session ON frames(session_id);
"""),
    # Analytics derived from segments (core/analysis/analytics.py); rebuilt by `emoscope recompute`.
    ("0002_analytics", """
ALTER TABLE segments ADD COLUMN rolling_volatility DOUBLE;
CREATE TABLE session_metrics (
    session_id VARCHAR NOT NULL,
    speaker VARCHAR NOT NULL,
    n_segments INTEGER,
    talk_s DOUBLE,
    turns INTEGER,
    interruptions INTEGER,
    overlap_s DOUBLE,
    silence_s DOUBLE,
    longest_silence_s DOUBLE,
    volatility DOUBLE,
    rolling_volatility_max DOUBLE,
    score_volatility DOUBLE,
    label_switches INTEGER,
    switches_per_min DOUBLE,
    mix DOUBLE[9],
    neg_share DOUBLE,
    mix_first DOUBLE[9],
    mix_last DOUBLE[9],
    neg_first DOUBLE,
    neg_last DOUBLE,
    neg_delta DOUBLE,
    trend VARCHAR,
    low_conf_n INTEGER,
    low_conf_share DOUBLE,
    unreliable BOOLEAN,
    unreliable_cause VARCHAR,
    rules_digest VARCHAR,
    PRIMARY KEY (session_id, speaker)
);
CREATE TABLE alerts (
    session_id VARCHAR NOT NULL,
    speaker VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    t_s DOUBLE,
    severity VARCHAR,
    detail VARCHAR,
    emotion VARCHAR,
    suggested_response VARCHAR,
    suggested_response_zh VARCHAR
);
CREATE INDEX alerts_session ON alerts(session_id);
"""),
    # The worker's queue (core/intake/jobs.py): one row per file that reached the inbox.
    ("0003_jobs", """
CREATE TABLE jobs (
    job_id VARCHAR PRIMARY KEY,
    file_name VARCHAR NOT NULL,
    original_name VARCHAR,
    status VARCHAR NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    error VARCHAR,
    session_id VARCHAR,
    attempts INTEGER NOT NULL DEFAULT 0,
    size_bytes BIGINT,
    mtime_ns BIGINT,
    metadata JSON,
    created_at TIMESTAMP NOT NULL,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX jobs_status ON jobs(status);
"""),
    # Who did what to which recording (core/storage/audit.py): folded in from the audit spool by the
    # writer; never updated, only appended to (and thinned by retention, never by a viewer).
    ("0004_audit", """
CREATE TABLE audit (
    audit_id VARCHAR PRIMARY KEY,
    happened_at TIMESTAMP NOT NULL,
    who VARCHAR NOT NULL,
    roles VARCHAR,
    action VARCHAR NOT NULL,
    target VARCHAR,
    detail JSON
);
CREATE INDEX audit_at ON audit(happened_at);
"""),
    # Which rule set (core/analysis/rules.py: [sets.NAME] in emoscope.toml) judged each session.
    ("0005_rule_set", """
ALTER TABLE session_metrics ADD COLUMN rule_set VARCHAR;
"""),
    # Notes analysts attach to a session (a diary entry); folded in from the notes spool by the
    # single writer (core/storage/notes.py). They outlive a re-analysis of the session.
    ("0006_notes", """
CREATE TABLE notes (
    note_id VARCHAR PRIMARY KEY,
    session_id VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    body VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    stored_at TIMESTAMP NOT NULL
);
CREATE INDEX notes_session ON notes(session_id);
"""),
    # How a run ended (running, finished, interrupted) and session flags such as `truncated`
    # (decoding stopped before the end of the file).
    ("0007_run_status_session_flags", """
ALTER TABLE runs ADD COLUMN status VARCHAR;
ALTER TABLE sessions ADD COLUMN flags VARCHAR[];
"""),
    # Each segment's 64-bit key (core/storage/vector_keys.py), the id of its row in the ANN index beside
    # the store (core/index/segment_index.py): stored so that a filter's keys and the store's
    # fingerprint are a column read, not an md5 of every segment id per query.
    ("0008_segment_keys", """
ALTER TABLE segments ADD COLUMN segment_key UBIGINT;
UPDATE segments SET segment_key = ('0x' || md5(segment_id)[1:16])::UBIGINT;
"""),
    # Recurring patterns among moments (core/index/pattern_runs.py, `emoscope patterns`): the latest
    # run's clusters, and each segment's pattern and place on the map; `run_id` says which
    # run made them.
    ("0009_patterns", """
CREATE TABLE patterns (
    run_id VARCHAR NOT NULL,
    pattern INTEGER NOT NULL,
    model VARCHAR NOT NULL,
    dim INTEGER NOT NULL,
    k INTEGER NOT NULL,
    size BIGINT NOT NULL,
    seed INTEGER,
    silhouette JSON,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, pattern)
);
CREATE TABLE segment_patterns (
    run_id VARCHAR NOT NULL,
    segment_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    pattern INTEGER NOT NULL,
    similarity FLOAT,
    representative INTEGER,
    x FLOAT,
    y FLOAT
);
CREATE INDEX segment_patterns_session ON segment_patterns(session_id);
"""),
    # What was said (core/text/transcripts.py): utterances per speaker channel from a speech-to-text
    # backend, their words with times where the backend gives them, the non-speech sounds it
    # heard, and which backend each run used (`runs.asr`, beside its emotion model).
    # `utterances.emotion` is the backend's own emotion tag (SenseVoice), a second opinion.
    ("0010_transcripts", """
CREATE TABLE utterances (
    utterance_id VARCHAR PRIMARY KEY,
    session_id VARCHAR NOT NULL,
    channel INTEGER NOT NULL,
    speaker VARCHAR NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    text VARCHAR NOT NULL,
    language VARCHAR,
    confidence DOUBLE,
    asr_model VARCHAR,
    emotion VARCHAR
);
CREATE INDEX utterances_session ON utterances(session_id);
CREATE TABLE words (
    utterance_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    n INTEGER NOT NULL,
    word VARCHAR NOT NULL,
    start_s DOUBLE,
    end_s DOUBLE,
    confidence DOUBLE
);
CREATE INDEX words_session ON words(session_id);
CREATE TABLE audio_events (
    session_id VARCHAR NOT NULL,
    channel INTEGER NOT NULL,
    start_s DOUBLE NOT NULL,
    end_s DOUBLE NOT NULL,
    event VARCHAR NOT NULL,
    source VARCHAR
);
CREATE INDEX audio_events_session ON audio_events(session_id);
ALTER TABLE runs ADD COLUMN asr VARCHAR;
"""),
    # What the words say, per utterance (core/text/sentiment.py): [-1, 1] on the redacted text, and
    # which analysis gave it ("vader" for English, "snownlp" for Chinese); NULL with no words.
    ("0011_utterance_sentiment", """
ALTER TABLE utterances ADD COLUMN sentiment DOUBLE;
ALTER TABLE utterances ADD COLUMN sentiment_source VARCHAR;
"""),
    # One identity per model (core/base/models.py): the weights' hash beside the name, and runs
    # stored under a resolved path (the Upload page's old worker command) merged into the name
    # the same path was stored under, or the name the path stands for.
    ("0012_model_identity", """
ALTER TABLE runs ADD COLUMN weights VARCHAR;
UPDATE runs SET model = 'tiny-random'
 WHERE model LIKE '%/emotion2vec-tiny-random-%' OR model LIKE 'emotion2vec-tiny-random-%';
UPDATE runs SET model = 'emotion2vec_plus_large' WHERE model LIKE '%/%emotion2vec_plus_large%';
UPDATE runs SET model = 'emotion2vec_plus_base' WHERE model LIKE '%/%emotion2vec_plus_base%';
UPDATE runs SET model = 'emotion2vec_plus_seed' WHERE model LIKE '%/%emotion2vec_plus_seed%';
UPDATE runs SET model = (SELECT min(o.model) FROM runs o
                          WHERE o.model_path = runs.model_path AND o.model NOT LIKE '%/%')
 WHERE model LIKE '%/%' AND EXISTS (SELECT 1 FROM runs o WHERE o.model_path = runs.model_path
                                     AND o.model NOT LIKE '%/%');
UPDATE patterns SET model = 'tiny-random'
 WHERE model LIKE '%/emotion2vec-tiny-random-%' OR model LIKE 'emotion2vec-tiny-random-%';
"""),
    # Voice and words together (core/analysis/fusion.py), derived like the metrics and rebuilt by
    # `emoscope recompute`: the voice label read over each utterance, its fused state, its turn
    # (a run of one speaker's utterances) and the turn's fused state.
    ("0013_fused_states", """
ALTER TABLE utterances ADD COLUMN voice VARCHAR;
ALTER TABLE utterances ADD COLUMN fused VARCHAR;
ALTER TABLE utterances ADD COLUMN turn INTEGER;
ALTER TABLE utterances ADD COLUMN turn_fused VARCHAR;
"""),
    # How each segment sounded besides its emotion (core/analysis/prosody.py; measured by the prosody
    # analyser, ingest/prosody.py): median pitch, RMS level, words a second, and two curves of
    # one float32 every 0.1 s from the segment's start. Core's own columns, because the
    # raised_voice alert rule reads them whether or not this process measures anything.
    ("0014_prosody", """
ALTER TABLE segments ADD COLUMN pitch_hz DOUBLE;
ALTER TABLE segments ADD COLUMN loudness_dbfs DOUBLE;
ALTER TABLE segments ADD COLUMN rate_wps DOUBLE;
ALTER TABLE segments ADD COLUMN pitch_curve FLOAT[];
ALTER TABLE segments ADD COLUMN loudness_curve FLOAT[];
"""),
    # Calibration (core/storage/corrections, core/storage/heads): a reviewer's label for a moment, with who and
    # when (kept through a re-analysis, erased with the session); heads trained on the stored
    # embeddings of corrected moments, versioned; which head labelled each segment, and the
    # model's own label and confidence kept beside it so a rollback restores them exactly.
    ("0015_calibration", """
CREATE TABLE corrections (
    correction_id VARCHAR PRIMARY KEY,
    segment_id VARCHAR NOT NULL,
    session_id VARCHAR NOT NULL,
    label VARCHAR NOT NULL,
    reviewer VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    stored_at TIMESTAMP NOT NULL
);
CREATE INDEX corrections_session ON corrections(session_id);
CREATE TABLE heads (
    name VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    model VARCHAR,
    dim INTEGER NOT NULL,
    classes VARCHAR[] NOT NULL,
    classifier VARCHAR NOT NULL,
    params JSON NOT NULL,
    evaluation JSON NOT NULL,
    n_moments INTEGER NOT NULL,
    trained_at TIMESTAMP NOT NULL,
    trained_by VARCHAR,
    PRIMARY KEY (name, version)
);
CREATE TABLE head_activations (
    n INTEGER PRIMARY KEY,
    head VARCHAR,
    activated_at TIMESTAMP NOT NULL,
    activated_by VARCHAR,
    segments INTEGER
);
ALTER TABLE segments ADD COLUMN head VARCHAR;
ALTER TABLE segments ADD COLUMN head_label VARCHAR;
ALTER TABLE segments ADD COLUMN base_label VARCHAR;
ALTER TABLE segments ADD COLUMN base_confidence DOUBLE;
"""),
    # Categories (core/analysis/categories.py): the named conditions of emoscope.toml each session meets,
    # with the first utterance that met it; derived like the alerts, rebuilt by recompute.
    ("0016_session_categories", """
CREATE TABLE session_categories (
    session_id VARCHAR NOT NULL,
    category VARCHAR NOT NULL,
    severity VARCHAR,
    speaker VARCHAR,
    t_s DOUBLE,
    utterance_id VARCHAR,
    n_utterances INTEGER
);
CREATE INDEX session_categories_session ON session_categories(session_id);
"""),
]
