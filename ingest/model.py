"""Loading emotion2vec+ through FunASR, resolving the device, and FunASR's own inference loop.

The reference loop (`reference_infer`) is FunASR's per-waveform path; the batched engine in
`ingest.engine` must reproduce it.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.base import models
from core.base.errors import first_line
from core.base.labels import LABELS, label_of_token

log = logging.getLogger(__name__)

DEFAULT_MODEL = "emotion2vec_plus_large"
HUB_IDS = models.HUB_IDS


class ModelUnavailable(Exception):
    """The model cannot be loaded here; the message says how to fix it in one sentence."""


@dataclass(frozen=True)
class Output:
    """What one segment yields: frame logits, utterance scores and embedding, and the frame
    features only when asked for (T×D floats: what the store never keeps)."""
    frame_logits: np.ndarray  # (T, 9) with unused slots at -inf
    scores: np.ndarray  # (9,) softmax of the mean logits
    embedding: np.ndarray  # (D,) mean of the frame features
    frame_feats: np.ndarray | None = None  # (T, D) when asked for


@dataclass
class LoadedModel:
    name: str  # the model's one name however it was given (core.base.models.identity)
    path: str
    trained: bool
    device: str
    automodel: object  # funasr.AutoModel
    mask: np.ndarray  # (9,) bool, True where the slot is a real label
    weights: str = ""  # short hash of model.pt: with `name`, the model's identity
    # Batched engines built for this model (ingest.engine.get_engine), by their options:
    # they hold its device and weight copies, so they live and die with it.
    engines: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def module(self) -> torch.nn.Module:
        return self.automodel.model

    @property
    def dim(self) -> int:
        return int(self.module.cfg.get("embed_dim"))


def resolve_device(device: str = "auto") -> str:
    """'auto' → cuda when a GPU is visible, else cpu; an explicit cuda without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable("--device cuda was asked for but no CUDA GPU is visible; "
                               "use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelUnavailable(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def _local_copy(name: str) -> Path | None:
    """A hub model already on disk (ModelScope or Hugging Face cache), if any."""
    ms, hf = HUB_IDS[name]
    home = Path.home() / ".cache"
    ms_root = Path(os.environ.get("MODELSCOPE_CACHE", home / "modelscope" / "hub"))
    candidates = [ms_root / ms, ms_root / "models" / ms]
    hf_root = Path(os.environ.get("HF_HOME", home / "huggingface")) / "hub"
    snap = hf_root / ("models--" + hf.replace("/", "--")) / "snapshots"
    if snap.is_dir():
        candidates += sorted(snap.iterdir())
    for c in candidates:
        if (c / "model.pt").exists() and (c / "config.yaml").exists():
            return c
    return None


def _hub_reachable(host: str = "modelscope.cn", timeout: float = 3.0) -> bool:
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def locate(model: str) -> tuple[str, bool]:
    """Resolve --model to (what to hand FunASR, trained?) or raise ModelUnavailable."""
    model = next((name for name, ids in HUB_IDS.items() if model in ids), model)
    if model == "tiny-random":
        from ingest.tiny import build
        return str(build("tiny")), False
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.yaml").exists() or not (path / "model.pt").exists():
            raise ModelUnavailable(f"{path} is not a model directory: it needs config.yaml, "
                                   "model.pt and tokens.txt")
        meta = path / "emoscope.json"
        trained = not (meta.exists() and json.loads(meta.read_text()).get("trained") is False)
        return str(path), trained
    if model in HUB_IDS:
        local = _local_copy(model)
        if local is not None:
            return str(local), True
        if _hub_reachable():
            return HUB_IDS[model][0], True
        raise ModelUnavailable(
            f"{model} is not on this machine and the model hub cannot be reached; "
            "pass --model /path/to/dir (config.yaml, model.pt, tokens.txt) "
            "or --model tiny-random for an untrained test model")
    raise ModelUnavailable(f"unknown model {model!r}; use emotion2vec_plus_large, "
                           "emotion2vec_plus_base, emotion2vec_plus_seed, a directory, "
                           "or tiny-random")


@functools.lru_cache(maxsize=4)
def load(model: str = DEFAULT_MODEL, device: str = "auto") -> LoadedModel:
    """Load once per (model, device); later calls get the same object."""
    with contextlib.redirect_stdout(io.StringIO()):
        from funasr import AutoModel

    device = resolve_device(device)
    target, trained = locate(model)
    # FunASR prints its version to stdout and logs every key it maps; `predict` owns stdout.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            # FunASR defaults to 4 CPU threads; more threads than cores only slows it down.
            auto = AutoModel(model=target, disable_update=True, device=device,
                             log_level="ERROR", ncpu=len(os.sched_getaffinity(0)))
    except Exception as e:  # FunASR raises bare exceptions for missing files and downloads
        raise ModelUnavailable(f"FunASR could not load {model}: {first_line(e)}; "
                               "pass --model /path/to/dir or --model tiny-random") from e
    auto.model.eval()
    tokens = auto.kwargs["tokenizer"].token_list
    labels = [label_of_token(t) for t in tokens]
    if len(labels) != len(LABELS) or any(
            lab != want for lab, want in zip(labels, LABELS) if not lab.startswith("unuse")):
        raise ModelUnavailable(f"{model}: tokens.txt holds {labels}, not the nine emotion2vec+ "
                               "labels in their canonical order")
    mask = np.array([not t.startswith("unuse") for t in labels])
    return LoadedModel(canonical_name(model, target), target, trained, device, auto, mask,
                       weights=weights_hash(target))


def canonical_name(given: str, target: str) -> str:
    """One name for a model however it was given: `tiny-random` or its built directory are
    both `tiny-random`; a hub name, its hub id or its cached copy are the hub name; any other
    directory is named by its emoscope.json `name`, else by the directory's own name."""
    if given == "tiny-random" or given in HUB_IDS:
        return given
    for name, ids in HUB_IDS.items():
        if given in ids:
            return name
    return models.name_of_path(target)


def weights_hash(target: str) -> str:
    """The weights' short hash ("" for a hub id not on disk): part of the model's identity."""
    return models.weights_hash(Path(target) / "model.pt")


def head(lm: LoadedModel, feats: torch.Tensor) -> torch.Tensor:
    """Apply the linear classification head to features, masking unused label slots."""
    logits = lm.module.proj(feats)
    if not lm.mask.all():
        logits[..., torch.from_numpy(~lm.mask)] = float("-inf")
    return logits


def reference_infer(lm: LoadedModel, waves: list[np.ndarray], *,
                    frame_feats: bool = False) -> list[Output]:
    """FunASR's own loop: one `AutoModel.generate` call per waveform (frame features kept
    in the Output when `frame_feats`)."""
    outs = []
    with torch.inference_mode():
        for wav in waves:
            res = lm.automodel.generate(np.asarray(wav, np.float32), granularity="frame",
                                        extract_embedding=True, disable_pbar=True)[0]
            feats = torch.from_numpy(np.asarray(res["feats"], np.float32))
            logits = head(lm, feats.to(lm.device)).float().cpu().numpy()
            scores = np.zeros(len(LABELS), np.float32)
            scores[lm.mask] = np.asarray(res["scores"], np.float32)
            outs.append(Output(logits, scores, feats.numpy().mean(axis=0),
                               feats.numpy() if frame_feats else None))
    return outs
