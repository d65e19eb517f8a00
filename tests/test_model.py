import numpy as np
import pytest
import torch

from core.base.curves import pool, softmax
from ingest.model import ModelUnavailable, locate, reference_infer
from ingest.tiny import build


def test_tiny_random_is_deterministic(tmp_path):
    a = torch.load(build("tiny", tmp_path / "a") / "model.pt")
    b = torch.load(build("tiny", tmp_path / "b") / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_random_loads_through_funasr_untrained(model):
    assert model.trained is False and model.device == "cpu"
    assert type(model.automodel).__name__ == "AutoModel"
    assert model.mask.all()


def test_output_shapes_and_frame_logits_average_to_utterance(model, speech):
    out = reference_infer(model, [speech[:16000], speech], frame_feats=True)
    for o, n in zip(out, (16000, speech.size)):
        t = o.frame_feats.shape[0]
        assert abs(t - n / 320) <= 2  # 50 frames a second
        assert o.frame_feats.shape == (t, model.dim) and o.frame_logits.shape == (t, 9)
        assert o.embedding.shape == (model.dim,) and o.scores.shape == (9,)
        assert abs(o.scores.sum() - 1) < 1e-5
        # The head is linear: softmax(mean of frame logits) is the utterance distribution.
        np.testing.assert_allclose(softmax(o.frame_logits.mean(axis=0)), o.scores, atol=1e-5)
        np.testing.assert_allclose(o.frame_feats.mean(axis=0), o.embedding, atol=1e-5)


def test_curve_pooling_grid_and_normalisation(model, speech):
    o = reference_infer(model, [speech])[0]
    assert o.frame_feats is None  # the (T, D) features only when asked for
    t, p = pool(o.frame_logits, start_s=10.0, hop_s=0.1, window_s=0.5)
    assert np.allclose(np.diff(t), 0.1) and t[0] >= 10.0
    assert p.shape == (t.size, 9) and np.allclose(p.sum(axis=1), 1, atol=1e-5)


def test_masked_labels_get_zero_probability():
    logits = np.zeros((40, 9), np.float32)
    logits[:, 5] = -np.inf
    _, p = pool(logits, 0.0)
    assert np.all(p[:, 5] == 0) and np.allclose(p.sum(axis=1), 1)


def test_missing_model_is_one_clear_sentence(tmp_path):
    with pytest.raises(ModelUnavailable, match="config.yaml"):
        locate(str(tmp_path))
    with pytest.raises(ModelUnavailable, match="unknown model"):
        locate("no-such-model")
