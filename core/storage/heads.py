"""Heads: a classifier trained on the stored embeddings of corrected moments, versioned, that
relabels the whole store without running the encoder again.

emotion2vec's own head is a linear layer over the utterance embedding, so a new one is too:
multinomial logistic regression (scikit-learn) on standardised embeddings, classes balanced.
With the tens to hundreds of corrected moments an organisation has, a linear model is what
the data can support — a small MLP overfits them and its cross-validated figures would be
noise — it trains in milliseconds, its probabilities serve as the label's confidence, and
applying it needs only a matrix product (numpy), so activation and ingest never import
scikit-learn.

* `train` runs k-fold cross-validation (stratified) and then fits on every moment; the
  evaluation — accuracy, per-class precision and recall, the confusion matrix and the base
  model's accuracy on the same moments — is stored with the head (`heads`, version n+1 of
  its name).
* `activate` relabels every segment of the head's model in one transaction: the label (an
  organisation label counts as the emotion it names), the confidence, `head` and
  `head_label`; the model's own label and confidence are kept (`base_label`,
  `base_confidence`), and the analytics and alerts are rebuilt from the new labels
  (core/storage/derived) in the same transaction. A head whose cross-validated accuracy does not beat
  the base model's cannot be activated without `force`. `activate(None)` puts the model's own
  labels back exactly; `previous` names what was active before the last activation.
* `SessionWriter` calls `label_new` inside each save, so sessions stored later are labelled
  by the active head too.
"""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from core.base import places
from core.storage.store import Connection, Store, arrow_of
from core.base.times import utc_now

CLASSIFIER = "logistic-regression"
FOLDS = 5


class HeadError(ValueError):
    """A head that cannot be trained or activated; the message says why in one line."""


@dataclass
class Trained:
    classes: list[str]
    params: dict  # mean, scale, coef, intercept, counts_as
    evaluation: dict
    n_moments: int
    dim: int
    model: str | None


def _matrix(embeddings) -> np.ndarray:
    return np.vstack([np.asarray(e, dtype=np.float64) for e in embeddings])


def _fit(X: np.ndarray, y: np.ndarray, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    mean, scale = X.mean(axis=0), X.std(axis=0)
    scale[scale < 1e-12] = 1.0
    clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    clf.fit((X - mean) / scale, y)
    return {"classes": [str(c) for c in clf.classes_], "mean": mean.tolist(),
            "scale": scale.tolist(), "coef": clf.coef_.tolist(),
            "intercept": clf.intercept_.tolist()}


def probabilities(params: dict, X: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities of a stored head (numpy only)."""
    z = (np.asarray(X, dtype=np.float64) - np.asarray(params["mean"])) / np.asarray(
        params["scale"])
    logits = z @ np.asarray(params["coef"]).T + np.asarray(params["intercept"])
    if logits.shape[1] == 1:  # two classes: scikit-learn keeps one row, for the second class
        logits = np.hstack([np.zeros_like(logits), logits])
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def _per_class(truth: np.ndarray, guess: np.ndarray, classes: list[str]) -> list[dict]:
    out = []
    for c in classes:
        tp = int(np.sum((guess == c) & (truth == c)))
        said, real = int(np.sum(guess == c)), int(np.sum(truth == c))
        out.append({"label": c, "support": real,
                    "precision": tp / said if said else None,
                    "recall": tp / real if real else None})
    return out


def train(moments: pd.DataFrame, counts_as: dict[str, str], folds: int = FOLDS,
          seed: int = 0) -> Trained:
    """A head over `moments` (Reader.corrected_moments: label, base_label, embedding,
    model), with its k-fold evaluation beside the base model's labels of the same moments."""
    from sklearn.model_selection import StratifiedKFold
    if moments.empty:
        raise HeadError("no corrected moments yet: label some on the Session or Similar page, "
                        "or POST /v1/segments/{id}/label")
    dims = moments.embedding.map(len)
    dim = int(dims.mode().iloc[0])
    moments = moments[dims == dim].reset_index(drop=True)
    counts = moments.label.value_counts()
    if len(counts) < 2:
        raise HeadError(f"a head needs moments of at least two labels; all "
                        f"{len(moments)} corrected moments are {counts.index[0]!r}")
    if counts.min() < 2:
        raise HeadError(f"each label needs at least two corrected moments: "
                        f"{', '.join(f'{k} has {v}' for k, v in counts.items() if v < 2)}")
    X, y = _matrix(moments.embedding), moments.label.to_numpy(dtype=object)
    k = int(min(folds, counts.min()))
    oof = np.empty(len(y), dtype=object)
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(X, y):
        p = _fit(X[tr], y[tr], seed)
        oof[te] = np.asarray(p["classes"], dtype=object)[
            probabilities(p, X[te]).argmax(axis=1)]
    classes = sorted(counts.index)
    base = moments.base_label.to_numpy(dtype=object)
    # The model's label is right when it is the correction or the emotion it counts as.
    base_right = (base == y) | (base == np.array([counts_as.get(v, v) for v in y], object))
    base_as = np.where(base_right, y, base)
    confusion = [[int(np.sum((y == t) & (oof == g))) for g in classes] for t in classes]
    base_rows = {r["label"]: r for r in _per_class(y, base_as, classes)}
    evaluation = {
        "folds": k, "moments": len(y), "accuracy": float(np.mean(oof == y)),
        "base_accuracy": float(np.mean(base_right)),
        "per_class": [{**h, "base_recall": base_rows[h["label"]]["recall"]}
                      for h in _per_class(y, oof, classes)],
        "confusion": {"labels": classes, "matrix": confusion},
    }
    params = _fit(X, y, seed)
    params["counts_as"] = {c: counts_as.get(c, c) for c in params["classes"]}
    models = moments.model.dropna()
    return Trained(params["classes"], params, evaluation, len(y), dim,
                   str(models.mode().iloc[0]) if len(models) else None)


def save(store: Store, name: str, t: Trained, by: str | None) -> int:
    """Store `t` as the next version of `name`; returns the version."""
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 40:
        raise HeadError(f"a head's name is letters, digits, - and _ (at most 40): {name!r}")
    with store.write() as con:
        (last,) = con.execute("SELECT coalesce(max(version), 0) FROM heads WHERE name = ?",
                              [name]).fetchone()
        version = int(last) + 1
        con.execute("INSERT INTO heads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [name, version, t.model, t.dim, t.classes, CLASSIFIER,
                     json.dumps(t.params), json.dumps(t.evaluation), t.n_moments, utc_now(), by])
    return version


def tag(name: str, version: int) -> str:
    return f"{name}@v{version}"


def resolve(con: Connection, spec: str) -> dict:
    """"NAME" (its newest version) or "NAME@vN" → the stored head row."""
    name, _, v = spec.partition("@v")
    sql = "SELECT * FROM heads WHERE name = ? " + ("AND version = ?" if v else
                                                   "ORDER BY version DESC LIMIT 1")
    try:
        cur = con.execute(sql, [name, int(v)] if v else [name])
    except ValueError:
        raise HeadError(f"a head is NAME or NAME@vN, not {spec!r}") from None
    row = cur.fetchone()
    if row is None:
        known = [tag(*r) for r in con.execute("SELECT name, version FROM heads "
                                              "ORDER BY name, version").fetchall()]
        raise HeadError(f"no head {spec!r}; known: {', '.join(known) or 'none yet'}")
    head = dict(zip([d[0] for d in cur.description], row))
    head["params"], head["evaluation"] = (json.loads(head["params"]),
                                          json.loads(head["evaluation"]))
    return head


def active(con: Connection) -> str | None:
    """The active head's tag (NAME@vN), or None: the model's own labels."""
    row = con.execute("SELECT head FROM head_activations ORDER BY n DESC LIMIT 1").fetchone()
    return row[0] if row else None


def previous(con: Connection) -> str | None:
    """What was active before the last activation (None: the model's own labels)."""
    rows = con.execute("SELECT head FROM head_activations ORDER BY n DESC LIMIT 2").fetchall()
    if not rows:
        raise HeadError("no head was ever activated: nothing to go back to")
    return rows[1][0] if len(rows) > 1 else None


def _restore_base(con: Connection, where: str = "TRUE", params=()) -> None:
    con.execute("UPDATE segments SET label = base_label, confidence = base_confidence, "
                "head = NULL, head_label = NULL, base_label = NULL, base_confidence = NULL "
                f"WHERE base_label IS NOT NULL AND {where}", list(params))


def _relabel(con: Connection, head: dict, session_ids: list[str] | None = None) -> int:
    """Label the head's model's segments (of `session_ids`, else all) with the head."""
    cond, params = "TRUE", []
    if session_ids is not None:
        cond, params = "list_contains(?, g.session_id)", [session_ids]
    if head["model"]:
        cond += " AND r.model = ?"
        params.append(head["model"])
    seg = arrow_of(con.execute(
        "SELECT g.segment_id, g.embedding FROM segments g JOIN sessions s USING (session_id) "
        "LEFT JOIN runs r ON r.run_id = s.run_id WHERE g.embedding IS NOT NULL "
        f"AND len(g.embedding) = {int(head['dim'])} AND {cond}", params))
    if seg.num_rows == 0:
        return 0
    X = seg.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False) \
        .reshape(seg.num_rows, int(head["dim"]))
    prob = probabilities(head["params"], X)
    classes = np.asarray(head["params"]["classes"], dtype=object)
    said = classes[prob.argmax(axis=1)]
    counts_as = head["params"]["counts_as"]
    upd = pd.DataFrame({"segment_id": seg.column("segment_id").to_pylist(),
                        "head_label": said, "label": [counts_as[x] for x in said],
                        "confidence": prob.max(axis=1)})
    con.register("head_upd", upd)
    try:
        con.execute(
            "UPDATE segments SET base_label = coalesce(base_label, segments.label), "
            "base_confidence = coalesce(base_confidence, segments.confidence), "
            "label = u.label, confidence = u.confidence, head_label = u.head_label, head = ? "
            "FROM head_upd u WHERE segments.segment_id = u.segment_id",
            [tag(head["name"], head["version"])])
    finally:
        con.unregister("head_upd")
    return len(upd)


def activate(store: Store, spec: str | None, rules, by: str | None, force: bool = False,
             progress=None) -> dict:
    """Make `spec` (NAME, NAME@vN; None: the model's own labels) the store's labels, with
    the analytics and alerts rebuilt, in one transaction."""
    from core.storage.derived import recompute_in
    store.migrate()
    with store.write() as con:
        head = resolve(con, spec) if spec else None
        if head is not None and not force:
            ev = head["evaluation"]
            if ev["accuracy"] <= ev["base_accuracy"]:
                raise HeadError(
                    f"{tag(head['name'], head['version'])}: cross-validated accuracy "
                    f"{ev['accuracy']:.0%} does not beat the base model's {ev['base_accuracy']:.0%}"
                    " on the same moments; activate it with --force if you must")
        _restore_base(con)
        n = _relabel(con, head) if head is not None else 0
        out = recompute_in(con, rules, progress)
        (last,) = con.execute("SELECT coalesce(max(n), 0) FROM head_activations").fetchone()
        now = tag(head["name"], head["version"]) if head is not None else None
        con.execute("INSERT INTO head_activations VALUES (?, ?, ?, ?, ?)",
                    [int(last) + 1, now, utc_now(), by, n])
    return {"head": now, "segments": n, "sessions": out["sessions"], "alerts": out["alerts"]}


def label_new(con: Connection, segs: list, emb: np.ndarray, run_id: str | None
              ) -> tuple[list, dict]:
    """The active head's labels for a group about to be stored (SessionWriter, in its
    transaction): `segs` ((session id, Segment) pairs) relabelled, and the segments' head
    columns as Arrow arrays; unchanged when no head is active or it is of another model."""
    import pyarrow as pa
    if not con.execute("SELECT count(*) FROM information_schema.tables "
                       "WHERE table_name = 'head_activations'").fetchone()[0]:
        return segs, {}
    spec = active(con)
    if spec is None or emb is None or emb.ndim != 2:
        return segs, {}
    head = resolve(con, spec)
    model = con.execute("SELECT model FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if emb.shape[1] != int(head["dim"]) or (head["model"] and model and model[0] != head["model"]):
        return segs, {}
    prob = probabilities(head["params"], emb)
    said = np.asarray(head["params"]["classes"], dtype=object)[prob.argmax(axis=1)]
    counts_as = head["params"]["counts_as"]
    conf = prob.max(axis=1)
    out = [(sid, replace(s, label=counts_as[x], confidence=float(c)))
           for (sid, s), x, c in zip(segs, said, conf)]
    return out, {"head": pa.array([spec] * len(segs), pa.string()),
                 "head_label": pa.array(list(said), pa.string()),
                 "base_label": pa.array([s.label for _, s in segs], pa.string()),
                 "base_confidence": pa.array([s.confidence for _, s in segs], pa.float64())}


def evaluation_table(ev: dict) -> pd.DataFrame:
    """Per class: support, the head's cross-validated precision and recall, the base model's
    recall on the same moments; then the accuracy of both."""
    rows = [{"label": r["label"], "moments": r["support"], "precision": r["precision"],
             "recall": r["recall"], "base recall": r["base_recall"]} for r in ev["per_class"]]
    rows.append({"label": "accuracy", "moments": ev["moments"], "precision": None,
                 "recall": ev["accuracy"], "base recall": ev["base_accuracy"]})
    return pd.DataFrame(rows)


# -- activation asked for in the dashboard, carried out by the writer --------------------------
REQUESTS = places.HEAD_REQUESTS


def requests_dir(db) -> Path:
    return places.folder(db, REQUESTS)


def request(db, spec: str | None, who, previous: bool = False, force: bool = False) -> Path:
    """An activation (or `previous`: a rollback) asked for by an admin in the dashboard: a
    file the worker (the single writer) carries out between jobs."""
    import uuid

    from core.base.private import private_dir, write_atomic
    if not who.is_admin:
        raise PermissionError("only an admin may activate a head")
    folder = private_dir(requests_dir(db))
    body = {"spec": spec, "previous": previous, "force": force, "who": who.who,
            "at": utc_now().isoformat()}
    target = folder / f"{utc_now():%Y%m%d%H%M%S%f}-{uuid.uuid4().hex[:8]}.json"
    write_atomic(target, json.dumps(body).encode())
    return target


def pending_requests(db) -> list[dict]:
    folder = requests_dir(db)
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return out


def resume_requests(store: Store, rules) -> list[str]:
    """Carry out the dashboard's activation requests, oldest first; one line per request. A
    request that cannot be carried out is moved to rejected/ with its reason."""
    import os
    folder = requests_dir(store.path)
    lines = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            body = json.loads(path.read_text())
            spec = body.get("spec")
            if body.get("previous"):
                with store.read() as con:
                    spec = previous(con)
            out = activate(store, spec, rules, body.get("who"), bool(body.get("force")))
            lines.append(f"activated {out['head'] or 'the base model'} for {body.get('who')}: "
                         f"{out['segments']} segments relabelled")
            path.unlink(missing_ok=True)
        except (HeadError, ValueError, OSError) as e:
            target = folder / "rejected" / path.name
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
            lines.append(f"head request {path.name}: {e}; moved to rejected/")
    return lines
