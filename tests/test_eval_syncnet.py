"""SyncNet protocol arithmetic against hand-computed values, and the model/loader path with random weights
saved in the official format (a plain state dict with syncnet_python's key names)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.evaluation.errors import SyncNetWeightsMissing
from workbench.evaluation.syncnet import (
    SyncNetS,
    SyncNetScorer,
    load_syncnet,
    mfcc,
    offset_distances,
    scores_from_distances,
    syncnet_weights_path,
    to_int16,
)


def test_offset_search_matches_hand_computation():
    # v = [1, 2, 3], a = [2, 3, 7], vshift 1: audio padded to [0, 2, 3, 7, 0].
    # rows (|v_i - a_{i+j-1}|): [1, 1, 2], [0, 1, 5], [0, 4, 3]; column means 1/3, 2, 10/3.
    # min at j=0 -> offset = vshift - 0 = +1 (v_i matches a_{i-1}: the audio is ahead),
    # LSE-D = 1/3, LSE-C = median(1/3, 2, 10/3) - 1/3 = 5/3.
    v = np.array([[1.0], [2.0], [3.0]])
    a = np.array([[2.0], [3.0], [7.0]])
    d = offset_distances(v, a, vshift=1)
    np.testing.assert_allclose(d, [[1, 1, 2], [0, 1, 5], [0, 4, 3]], atol=1e-5)
    s = scores_from_distances(d)
    assert s.offset == 1
    assert s.min_dist == pytest.approx(1 / 3, abs=1e-5)  # pairwise_distance adds eps=1e-6 inside the norm
    assert s.confidence == pytest.approx(5 / 3, abs=1e-5)  # pairwise_distance adds eps=1e-6 inside the norm
    assert list(s.offsets) == [1, 0, -1]
    assert s.n_windows == 3


@pytest.mark.parametrize("shift", [-4, 0, 3])
def test_offset_recovered_from_shifted_features(shift):
    rng = np.random.default_rng(0)
    n, dim = 60, 16
    audio = rng.normal(size=(n, dim))
    # video window i shows what audio window i - shift says: SyncNet reports offset = shift
    video = np.stack([audio[i - shift] if 0 <= i - shift < n else rng.normal(size=dim) for i in range(n)])
    s = scores_from_distances(offset_distances(video, audio, vshift=15))
    assert s.offset == shift
    assert s.confidence > 1.0
    assert s.min_dist < np.median(s.mean_dists)


def test_equal_distances_give_zero_confidence():
    s = scores_from_distances(np.full((10, 31), 4.0))
    assert s.confidence == 0.0 and s.min_dist == 4.0 and s.offset == 15  # the first minimum, as torch.min


def test_mfcc_rate_and_int16_scale():
    t = np.arange(16000) / 16000
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    cc = mfcc(audio)
    assert cc.shape[0] == 13 and abs(cc.shape[1] - 100) <= 1  # 13 coefficients at 100 Hz
    assert to_int16(np.array([1.0, -1.0, 0.5])).tolist() == [32767, -32768, 16384]
    np.testing.assert_allclose(mfcc(to_int16(audio)), cc)  # int16 input is used as it is


def _official_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    net = SyncNetS()
    for m in net.modules():  # non-trivial BatchNorm statistics, so eval mode matters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


def test_official_key_names_and_shapes():
    sd = SyncNetS().state_dict()
    assert sd["netcnnaud.0.weight"].shape == (64, 1, 3, 3)
    assert sd["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert sd["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert sd["netcnnlip.18.weight"].shape == (512, 256, 1, 6, 6)
    assert sd["netfcaud.3.weight"].shape == (1024, 512)
    assert sd["netfclip.1.running_var"].shape == (512,)
    assert {k.split(".")[0] for k in sd} == {"netcnnaud", "netfcaud", "netfclip", "netcnnlip"}


@pytest.mark.parametrize("legacy", [False, True])
def test_loader_reads_official_format(tmp_path, legacy):
    state = _official_state()
    path = tmp_path / "syncnet_eval" / "syncnet_v2.model"
    path.parent.mkdir()
    # The published file predates torch's zip format; both serialisations must load.
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    assert syncnet_weights_path(tmp_path) == path
    net = load_syncnet(path)
    assert not net.training
    ref = SyncNetS()
    ref.load_state_dict(state)
    ref.eval()
    x = torch.randn(2, 1, 13, 20)
    with torch.inference_mode():
        np.testing.assert_allclose(net.forward_aud(x).numpy(), ref.forward_aud(x).numpy(), rtol=1e-5, atol=1e-5)
    scorer = SyncNetScorer.from_models_dir(tmp_path, "cpu")
    assert len(scorer.weights_sha256) == 64


def test_loader_rejects_foreign_checkpoint(tmp_path):
    from workbench.faces.checkpoints import CheckpointError

    state = _official_state()
    state["extra.weight"] = torch.zeros(1)
    del state["netfcaud.3.bias"]
    p = tmp_path / "bad.model"
    torch.save(state, p)
    with pytest.raises(CheckpointError, match="netfcaud.3.bias"):
        load_syncnet(p)


def test_missing_weights_message(tmp_path):
    with pytest.raises(SyncNetWeightsMissing, match="workbench weights download syncnet_eval"):
        syncnet_weights_path(tmp_path)


def test_scorer_runs_protocol_on_crops():
    torch.manual_seed(1)
    net = SyncNetS()
    net.load_state_dict(_official_state(1))
    scorer = SyncNetScorer(net, "cpu", batch_size=4)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, size=(11, 224, 224, 3), dtype=np.uint8)
    audio = (0.1 * rng.normal(size=11 * 640)).astype(np.float32)
    vf, af = scorer.features(crops, audio)
    assert vf.shape == (6, 1024) and af.shape == (6, 1024)  # min_length - 5 windows
    s = scorer.score(crops, audio)
    assert len(s.mean_dists) == 31 and -15 <= s.offset <= 15
    assert s.confidence >= 0 and s.min_dist == pytest.approx(float(s.mean_dists.min()))
