"""renderers/musetalk.py with random-init models saved in the official formats and loaded by the real code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from testkit.models import UNET_CONFIG_TINY, make_synthetic_avatar, make_tiny_models
from workbench.config import Settings
from workbench.lipsync.base import Renderer
from workbench.lipsync.compositor import Compositor
from workbench.lipsync.musetalk.renderer import MuseTalkRenderer, positional_encoding, resolve_device
from workbench.lipsync.musetalk.whisper_features import BlockParams
from workbench.weights import MissingWeightsError, WeightsError

FAST = BlockParams(hop_frames=10, right_frames=3)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("mt") / "models", versions=("v15", "v1"))


@pytest.fixture(scope="module")
def renderer(models) -> MuseTalkRenderer:
    return MuseTalkRenderer.from_models_dir(models, device="cpu", dtype="float32", batch_size=4, block_params=FAST)


@pytest.fixture(scope="module")
def avatar(renderer):
    av = make_synthetic_avatar(n_frames=5, seed=1)
    av.latents = renderer.encode_crops(av.crops)
    return av


def random_conditions(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 50, 384)).astype(np.float32)


def test_loads_through_settings_and_describes(models, renderer):
    assert isinstance(renderer, Renderer) and renderer.name == "musetalk"
    assert renderer.describe() == "MuseTalk v15 on cpu (float32)"
    assert renderer.device.type == "cpu" and renderer.dtype == torch.float32
    assert renderer.unet.config.in_channels == 8 and renderer.unet.config.cross_attention_dim == 384
    # the plain state dict was loaded, not left at random init
    sd = torch.load(models / "musetalkV15/unet.pth", map_location="cpu", weights_only=True)
    assert torch.equal(renderer.unet.state_dict()["conv_in.weight"], sd["conv_in.weight"])
    # device and dtype from Settings ("auto" on a CPU machine = cpu + float32)
    r = MuseTalkRenderer.from_models_dir(models)
    assert r.device.type == "cpu" and r.dtype == torch.float32 and r.batch_size == Settings().batch_size


def test_v1_weights_load(models):
    r = MuseTalkRenderer.from_models_dir(models, version="v1")
    sd = torch.load(models / "musetalk/pytorch_model.bin", map_location="cpu", weights_only=True)
    assert torch.equal(r.unet.state_dict()["conv_out.bias"], sd["conv_out.bias"])
    with pytest.raises(ValueError, match="version"):
        MuseTalkRenderer.from_models_dir(models, version="v2")


def test_missing_weights_message(tmp_path):
    with pytest.raises(MissingWeightsError) as ei:
        MuseTalkRenderer.from_models_dir(tmp_path / "models")
    assert "workbench weights download" in str(ei.value) and "musetalkV15/unet.pth" in str(ei.value)


def test_unet_that_does_not_fit_its_config(models, tmp_path):
    bad = tmp_path / "models"
    shutil.copytree(models, bad)
    cfg = {**UNET_CONFIG_TINY, "block_out_channels": [64, 64, 64, 64]}
    (bad / "musetalkV15/musetalk.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="does not fit"):
        MuseTalkRenderer.from_models_dir(bad)


def test_resolve_device():
    assert resolve_device("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_device("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device("cpu", "float16") == (torch.device("cpu"), torch.float16)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda", "auto")
        assert resolve_device("auto", "auto") == (torch.device("cpu"), torch.float32)


def test_positional_encoding_is_musetalks():
    pe = positional_encoding()
    assert pe.shape == (50, 384) and pe.dtype == np.float32
    assert pe[0, 0] == 0 and pe[0, 1] == 1
    np.testing.assert_allclose(pe[7, 10], np.sin(7 * 10000 ** (-10 / 384)), rtol=1e-5)
    np.testing.assert_allclose(pe[7, 11], np.cos(7 * 10000 ** (-10 / 384)), rtol=1e-5)


# --- preparation-side encoder -------------------------------------------------------------------


def test_encode_crops(renderer, avatar):
    lat = avatar.latents
    assert lat.shape == (5, 8, 32, 32) and lat.dtype == np.float32
    np.testing.assert_array_equal(
        renderer.encode_crops(avatar.crops[:2]), renderer.encode_crops(avatar.crops[:2])
    )  # mode, not a sample
    one = np.concatenate([renderer.encode_crops(avatar.crops[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(one, lat[:3], atol=1e-4)
    # the first four channels see only the upper half of the crop
    changed = avatar.crops[:1].copy()
    changed[:, 200:] = 255 - changed[:, 200:]
    again = renderer.encode_crops(changed)
    np.testing.assert_allclose(again[:, :4], lat[:1, :4], atol=1e-5)
    assert np.abs(again[:, 4:] - lat[:1, 4:]).max() > 1e-3
    with pytest.raises(ValueError, match="uint8"):
        renderer.encode_crops(avatar.crops.astype(np.float32))


# --- rendering ----------------------------------------------------------------------------------


def test_render_shapes_and_paste_region(renderer, avatar):
    conds = random_conditions(3)
    frames = renderer.render(avatar, [0, 3, 4], list(conds))
    assert len(frames) == 3
    for i, f in zip([0, 3, 4], frames, strict=True):
        assert f.shape == avatar.frames[i].shape and f.dtype == np.uint8
        x1, y1, x2, y2 = avatar.boxes[i]
        outside = np.ones(f.shape[:2], bool)
        outside[y1:y2, x1:x2] = False
        np.testing.assert_array_equal(f[outside], avatar.frames[i][outside])
        assert np.any(f[y1:y2, x1:x2] != avatar.frames[i][y1:y2, x1:x2])
    assert renderer.render(avatar, [], []) == []


def test_paste_goes_through_the_compositor(renderer, avatar):
    cond = random_conditions(1, seed=4)
    face = renderer.generate(avatar.latents[2:3], cond)[0]
    expected = Compositor(avatar).paste(2, face)
    np.testing.assert_array_equal(renderer.render(avatar, [2], [cond[0]])[0], expected)


def test_batch_equals_one_at_a_time(renderer, avatar):
    idx = [0, 1, 4, 3, 1]
    conds = random_conditions(len(idx), seed=2)
    batch = renderer.render(avatar, idx, list(conds))  # batches of 4 + 1
    single = [renderer.render(avatar, [i], [c])[0] for i, c in zip(idx, conds, strict=True)]
    for a, b in zip(batch, single, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # float rounding may flip a byte
    # before quantisation the batch and the single runs agree closely
    raw_b = renderer.decode_latents(renderer.unet_step(avatar.latents[idx[:3]], conds[:3]), raw=True)
    raw_s = torch.cat(
        [
            renderer.decode_latents(renderer.unet_step(avatar.latents[[i]], conds[[k]]), raw=True)
            for k, i in enumerate(idx[:3])
        ]
    )
    torch.testing.assert_close(raw_b, raw_s, atol=1e-4, rtol=0)


def test_audio_changes_the_mouth(renderer, avatar):
    a = renderer.render(avatar, [0], [random_conditions(1, seed=5)[0]])[0]
    b = renderer.render(avatar, [0], [renderer.silence_condition()])[0]
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.1


def test_avatar_without_latents_is_encoded_on_demand(renderer, avatar):
    bare = make_synthetic_avatar(n_frames=5, seed=1)
    assert bare.latents is None
    conds = random_conditions(2, seed=6)
    got = renderer.render(bare, [4, 1], list(conds))
    want = renderer.render(avatar, [4, 1], list(conds))
    for a, b in zip(got, want, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_render_rejects_bad_arguments(renderer, avatar):
    with pytest.raises(ValueError, match="conditions"):
        renderer.render(avatar, [0, 1], [random_conditions(1)[0]])
    with pytest.raises(IndexError):
        renderer.render(avatar, [5], [random_conditions(1)[0]])
    with pytest.raises(ValueError, match="50, 384"):
        renderer.render(avatar, [0], [np.zeros((10, 384), np.float32)])


def test_audio_to_frames_end_to_end(renderer, avatar):
    audio = (0.1 * np.sin(np.linspace(0, 400, 16_000 // 5))).astype(np.float32)  # 0.2 s: 5 frames
    fe = renderer.new_frontend()
    conds = fe.process(audio)
    assert len(conds) == 5
    np.testing.assert_allclose(np.stack(conds), renderer.audio_conditions(audio), atol=1e-5)
    frames = renderer.render(avatar, [avatar.loop_index(i) for i in range(5)], conds)
    assert len(frames) == 5 and all(f.shape == avatar.frames[0].shape for f in frames)


def test_bfloat16_path(models, avatar):
    """Half-precision weights and inputs flow through; on a CPU only the cheap UNet step is run."""
    r = MuseTalkRenderer.from_models_dir(models, device="cpu", dtype="bfloat16")
    assert r.dtype == torch.bfloat16
    assert next(r.unet.parameters()).dtype == torch.bfloat16 and next(r.vae.parameters()).dtype == torch.bfloat16
    assert next(r.whisper.encoder.parameters()).dtype == torch.bfloat16
    out = r.unet_step(avatar.latents[:1], random_conditions(1))
    assert out.shape == (1, 4, 32, 32) and out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_vae_bin_release_name_loads(tmp_path):
    models = make_tiny_models(tmp_path / "models", vae_format="bin", whisper_format="bin")
    r = MuseTalkRenderer.from_models_dir(models)
    lat = r.encode_crops(make_synthetic_avatar(1).crops)
    assert lat.shape == (1, 8, 32, 32)


def test_identity_follows_the_vae(models, renderer, tmp_path):
    """Preparation keys cached latents on `identity`: same VAE and dtype, same key; another VAE, another key."""
    assert renderer.identity.startswith("sd-vae-") and renderer.identity.endswith("-float32")
    assert MuseTalkRenderer.from_models_dir(models, version="v1").identity == renderer.identity
    other = make_tiny_models(tmp_path / "models", seed=3)
    assert MuseTalkRenderer.from_models_dir(other).identity != renderer.identity


def test_renders_a_prepared_sample_avatar(renderer, yongen_avatar):
    """A real prepared avatar (no latents: prepared without MuseTalk) renders; only its face box changes."""
    frames = renderer.render(yongen_avatar, [0, 7], list(random_conditions(2, seed=8)))
    for i, f in zip([0, 7], frames, strict=True):
        src = yongen_avatar.frames[i]
        assert f.shape == src.shape
        x1, y1, x2, y2 = yongen_avatar.boxes[i]
        diff = np.any(f != src, axis=2)
        ys, xs = np.nonzero(diff)
        assert ys.size and ys.min() >= y1 and ys.max() < y2 and xs.min() >= x1 and xs.max() < x2
    assert yongen_avatar.latents is None  # the shared avatar is not modified
