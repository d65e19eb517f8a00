"""Random-weight emotion2vec checkpoints in FunASR's local-directory layout.

`tiny-random` is how tests, CI and offline demos run: the real architecture at small
dimensions with fixed-seed weights, loaded through the same `funasr.AutoModel` path as the
released models. The `base` and `large` shapes (true dimensions, random weights) exist for
benchmarks. Labels from any of these mean nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from core.base.labels import TOKENS

# name -> (embed_dim, heads, depth, prenet_depth, conv feature dim)
# base and large are the true shapes of emotion2vec_plus_base (data2vec 2.0 base: 768-dim,
# 4 prenet + 8 main = 12 blocks, ~93 M parameters) and emotion2vec_plus_large (data2vec 2.0
# large: 1024-dim, 8 prenet + 16 main = 24 blocks, ~313 M parameters).
SHAPES = {
    "tiny": (64, 4, 2, 1, 64),
    "base": (768, 12, 8, 4, 512),
    "large": (1024, 16, 16, 8, 512),
}
SEED = 20240101
FORMAT_VERSION = 1  # bump when the layout below changes, so caches rebuild


def _config(shape: str) -> dict:
    dim, heads, depth, prenet, feat = SHAPES[shape]
    return {
        "model": "Emotion2vec",
        "model_conf": {
            "loss_beta": 0.0, "loss_scale": None, "depth": depth,
            "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0, "num_heads": heads,
            "norm_eps": 1e-05, "norm_affine": True, "encoder_dropout": 0.1,
            "post_mlp_drop": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
            "dropout_input": 0.0, "layerdrop": 0.05, "embed_dim": dim, "mlp_ratio": 4.0,
            "layer_norm_first": False, "average_top_k_layers": depth,
            "end_of_block_targets": False, "clone_batch": 8, "normalize": True,
            "modalities": {"audio": {
                "type": "AUDIO", "prenet_depth": prenet, "prenet_layerdrop": 0.05,
                "prenet_dropout": 0.1, "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0,
                "num_extra_tokens": 10, "init_extra_token_zero": False,
                "mask_noise_std": 0.01, "mask_prob_min": None, "mask_prob": 0.5,
                "inverse_mask": False, "mask_prob_adjust": 0.05, "keep_masked_pct": 0.0,
                "mask_length": 5, "add_masks": False, "remove_masks": False,
                "mask_dropout": 0.0, "encoder_zero_mask": True, "mask_channel_prob": 0.0,
                "mask_channel_length": 64, "ema_local_encoder": False,
                "local_grad_mult": 1.0, "use_alibi_encoder": True, "alibi_scale": 1.0,
                "learned_alibi": False, "alibi_max_pos": None,
                "learned_alibi_scale": True, "learned_alibi_scale_per_head": True,
                "learned_alibi_scale_per_layer": False, "num_alibi_heads": heads,
                "model_depth": depth, "decoder": None, "extractor_mode": "layer_norm",
                "feature_encoder_spec":
                    f"[({feat}, 10, 5)] + [({feat}, 3, 2)] * 4 + [({feat},2,2)] + [({feat},2,2)]",
                "conv_pos_width": 95, "conv_pos_groups": 16, "conv_pos_depth": 5,
                "conv_pos_pre_ln": False,
            }},
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
    }


def cache_root() -> Path:
    return Path(os.environ.get("EMOSCOPE_CACHE", Path.home() / ".cache" / "emoscope"))


def build(shape: str = "tiny", root: Path | None = None) -> Path:
    """Write (once) and return the directory of a random-weight checkpoint of `shape`."""
    import torch
    import yaml
    from funasr.models.emotion2vec.model import Emotion2vec

    cfg = _config(shape)
    digest = hashlib.sha256(json.dumps([cfg, SEED, FORMAT_VERSION], sort_keys=True).encode())
    out = (root or cache_root()) / f"emotion2vec-{shape}-random-{digest.hexdigest()[:10]}"
    if (out / "model.pt").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = Emotion2vec(model_conf=cfg["model_conf"], vocab_size=len(TOKENS))
    # Nudge the learned ALiBi scales and the head off their defaults so the positional
    # and classification paths carry signal a test can see.
    with torch.no_grad():
        enc = model.modality_encoders["AUDIO"]
        enc.alibi_scale.uniform_(0.5, 1.5)
        model.proj.weight.normal_(0.0, 0.5)
    state = {k: v for k, v in model.state_dict().items()}
    torch.save(state, tmp / "model.pt")
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    (tmp / "tokens.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    (tmp / "emoscope.json").write_text(json.dumps({"trained": False, "shape": shape}))
    try:
        tmp.rename(out)
    except OSError:  # another process won the race; theirs is identical
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return out
