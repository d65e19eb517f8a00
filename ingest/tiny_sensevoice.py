"""A random-weight SenseVoiceSmall checkpoint in the released model's directory layout.

What `tiny-random` is to emotion2vec: the real architecture (SenseVoiceEncoderSmall, CTC over a
SentencePiece vocabulary that holds the language, emotion and audio-event tags) at small
dimensions, written as `config.yaml`, `configuration.json`, `model.pt`, `am.mvn` and a `.bpe.model`
exactly as iic/SenseVoiceSmall ships them, so tests load it through FunASR's own AutoModel path.
Its text means nothing; its tags are random.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ingest.tiny import cache_root

SEED = 20240102
FORMAT_VERSION = 1
BPE_FILE = "chn_jpn_yue_eng_ko_spectok.bpe.model"  # the released model's file name
# The tags SenseVoice writes before the text (<|en|><|NEUTRAL|><|Speech|><|woitn|>hello).
TAGS = ("<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
        "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|FEARFUL|>", "<|DISGUSTED|>",
        "<|SURPRISED|>", "<|EMO_UNKNOWN|>", "<|Speech|>", "<|BGM|>", "<|Laughter|>",
        "<|Applause|>", "<|Cry|>", "<|Sneeze|>", "<|Breath|>", "<|Cough|>", "<|Event_UNK|>",
        "<|withitn|>", "<|woitn|>")
_TEXT = """i want to cancel my account right now this is the third time i am calling
thank you for calling how can i help you today i am sorry to hear that
my bill is wrong again and nobody has fixed it let me check that for you
the refund should arrive within five working days is there anything else
good morning i feel tired today but the walk in the park helped a little"""


def _config() -> dict:
    return {
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            "output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2,
            "tp_blocks": 1, "dropout_rate": 0.1, "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1, "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder", "normalize_before": True,
            "kernel_size": 11, "sanm_shfit": 0, "selfattention_layer_type": "sanm"},
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": 7, "lfr_n": 6, "cmvn_file": None},
    }


def _cmvn(dim: int = 560) -> str:
    """A Kaldi-style am.mvn (the layout FunASR's load_cmvn reads): shift -10, scale 0.2."""
    shift = " ".join(["-10.0"] * dim)
    scale = " ".join(["0.2"] * dim)
    return (f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {shift} ]\n<Rescale> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n")


def build(root: Path | None = None) -> Path:
    """Write (once) and return the directory of the random-weight checkpoint."""
    import sentencepiece as spm
    import torch
    import yaml

    cfg = _config()
    digest = hashlib.sha256(json.dumps([cfg, TAGS, _TEXT, SEED, FORMAT_VERSION],
                                       sort_keys=True).encode()).hexdigest()[:10]
    out = (root or cache_root()) / f"sensevoice-tiny-random-{digest}"
    if (out / "model.pt").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "text.txt").write_text(_TEXT + "\n")
    spm.SentencePieceTrainer.train(
        input=str(tmp / "text.txt"), model_prefix=str(tmp / BPE_FILE[:-len(".model")]),
        vocab_size=120, model_type="bpe", user_defined_symbols=list(TAGS),
        character_coverage=1.0, minloglevel=2, num_threads=1)
    (tmp / "text.txt").unlink()
    (tmp / BPE_FILE[:-len(".model")]).with_suffix(".vocab").unlink(missing_ok=True)
    (tmp / "am.mvn").write_text(_cmvn())
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (tmp / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"bpemodel": BPE_FILE},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}))
    from funasr.models.sense_voice.model import SenseVoiceSmall
    sp = spm.SentencePieceProcessor(model_file=str(tmp / BPE_FILE))
    torch.manual_seed(SEED)
    model = SenseVoiceSmall(**cfg, **cfg["model_conf"], input_size=560,
                            vocab_size=sp.get_piece_size())
    torch.save(model.state_dict(), tmp / "model.pt")
    (tmp / "emoscope.json").write_text(json.dumps({"trained": False}))
    try:
        tmp.rename(out)
    except OSError:  # another process won the race; theirs is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return out
