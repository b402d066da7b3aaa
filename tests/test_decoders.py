"""The decoder hook: TAESD (AutoencoderTiny in madebyollin/taesd's file format) loaded by the real code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from testkit.models import make_synthetic_avatar, make_taesd, make_unet_vae
from workbench import weights
from workbench.lipsync.musetalk.decoders import TaesdDecoder, VaeDecoder, load_taesd, make_decoder
from workbench.lipsync.musetalk.renderer import MuseTalkRenderer
from workbench.weights import WeightsError


@pytest.fixture(scope="module")
def taesd_dir(tmp_path_factory):
    return make_taesd(tmp_path_factory.mktemp("taesd") / "models")


def test_taesd_files_are_the_hub_layout(taesd_dir):
    assert sorted(p.name for p in (taesd_dir / "taesd").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert json.loads((taesd_dir / "taesd" / "config.json").read_text())["_class_name"] == "AutoencoderTiny"
    spec = {f.path: f for f in weights.COMPONENTS["taesd"].files}
    assert spec["taesd/config.json"].repo_id == "madebyollin/taesd"
    assert spec["taesd/diffusion_pytorch_model.safetensors"].repo_filename == "diffusion_pytorch_model.safetensors"
    assert weights.check(taesd_dir, ["taesd"]).status("taesd") == "present"


def test_renderer_decodes_through_taesd(taesd_dir):
    unet, vae = make_unet_vae()
    dec = make_decoder("taesd", vae, taesd_dir, torch.device("cpu"), torch.float32)
    assert isinstance(dec, TaesdDecoder)
    ref = MuseTalkRenderer(unet, vae, None, torch.device("cpu"), torch.float32, batch_size=2)
    fast = MuseTalkRenderer(unet, vae, None, torch.device("cpu"), torch.float32, batch_size=2, decoder=dec)
    assert isinstance(ref.decoder, VaeDecoder) and "taesd" in fast.describe()
    av = make_synthetic_avatar(n_frames=2, seed=3)
    av.latents = ref.encode_crops(av.crops)
    conds = list(np.random.default_rng(0).standard_normal((2, 50, 384)).astype(np.float32))
    a, b = ref.render(av, [0, 1], conds), fast.render(av, [0, 1], conds)
    assert all(x.shape == y.shape == av.frames[0].shape for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # a different decoder ran
    # TAESD takes the scaled latents as they are: its output is AutoencoderTiny.decode of the UNet output
    pred = fast.unet_step(av.latents[[0]], conds[0][None])
    want = ((dec.model.decode(pred).sample / 2 + 0.5).clamp(0, 1) * 255).round()
    got = fast.decode_latents(pred, raw=True) * 255
    torch.testing.assert_close(got.round(), want)


def test_missing_taesd_says_how_to_fetch(tmp_path):
    with pytest.raises(WeightsError, match="weights download taesd"):
        load_taesd(tmp_path, torch.device("cpu"), torch.float32)
    with pytest.raises(ValueError, match="unknown decoder"):
        make_decoder("fast", None, tmp_path, torch.device("cpu"), torch.float32)


def test_banner_names_the_decoder(tmp_path):
    from workbench.ui import header

    report = weights.check(tmp_path)
    assert "TAESD" in header.status_lines("musetalk", report, False, decoder="taesd")["renderer"]
    assert "reference" in header.status_lines("musetalk", report, False)["renderer"]
