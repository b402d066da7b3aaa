"""Latent → image decoders for the MuseTalk renderer: the reference VAE, or TAESD for speed.

Both decode the same SD latent space the UNet predicts in (already multiplied by the VAE scaling factor
0.18215) and return images in [-1, 1], so the renderer is the same with either:

- `vae`: the sd-vae-ft-mse decoder MuseTalk was trained with (the reference); 622 GFLOP per 256x256 frame,
  78 % of a frame's cost.
- `taesd`: diffusers' `AutoencoderTiny` with madebyollin/taesd's weights, a distilled decoder of the same
  latent space (≈ 1.2 M decoder parameters). It takes the scaled latents as they are (its scaling factor
  is 1.0). It is an approximation of the VAE: its effect on lip-sync and image quality has to be judged
  with the evaluation on real weights before it is used for anything but speed.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Literal

from workbench.config import VAE_SCALING_FACTOR
from workbench.weights import WeightsError

# torch and diffusers are imported inside functions: importing this module must not load them
# (the CPU renderer and the app's CPU path import the lipsync packages and never need torch).
log = logging.getLogger(__name__)

DecoderName = Literal["vae", "taesd"]
DECODERS: tuple[str, ...] = ("vae", "taesd")
TAESD_FOLDER = "taesd"  # under the models directory, next to sd-vae/


class _Decoder(ABC):
    """A latent decoder behind one call: (B, 4, 32, 32) latents in the model's dtype → decoded images."""

    name = "base"

    def __init__(self, model: Any):
        self.model = model
        self._fn = self._decode

    @abstractmethod
    def _decode(self, latents): ...

    def __call__(self, latents):
        return self._fn(latents.to(self.model.dtype))

    def compile(self, mode: str | None = "max-autotune-no-cudagraphs") -> None:
        """torch.compile the decode for fixed batch shapes ("reduce-overhead" adds CUDA graphs)."""
        import torch

        self._fn = torch.compile(self._decode, mode=mode, dynamic=False)


class VaeDecoder(_Decoder):
    """The reference: AutoencoderKL.decode of latents / scaling factor."""

    name = "vae"

    def _decode(self, latents):
        return self.model.decode(latents / VAE_SCALING_FACTOR).sample


class TaesdDecoder(_Decoder):
    """AutoencoderTiny.decode of the scaled latents (TAESD's own scaling factor is 1)."""

    name = "taesd"

    def __init__(self, taesd: Any):
        super().__init__(taesd)
        sf = float(getattr(taesd.config, "scaling_factor", 1.0))
        if abs(sf - 1.0) > 1e-6:
            log.warning("TAESD config has scaling_factor %s; MuseTalk latents are decoded as they are", sf)

    def _decode(self, latents):
        return self.model.decode(latents).sample


def load_taesd(models_dir: Path | str, device, dtype) -> Any:
    """AutoencoderTiny from `models_dir/taesd` (madebyollin/taesd: config.json + diffusion_pytorch_model.safetensors)."""
    from diffusers import AutoencoderTiny

    folder = Path(models_dir) / TAESD_FOLDER
    if not (folder / "config.json").is_file():
        raise WeightsError(f"no TAESD weights in {folder}: run `workbench weights download taesd`")
    taesd = AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype)
    if taesd.config.latent_channels != 4:
        raise WeightsError(f"{folder} has {taesd.config.latent_channels} latent channels; MuseTalk needs 4")
    return taesd.to(device).eval().requires_grad_(False)


def make_decoder(name: str, vae: Any, models_dir: Path | str | None, device, dtype) -> VaeDecoder | TaesdDecoder:
    """The decoder called `name` ('vae' or 'taesd'); TAESD is loaded from `models_dir`."""
    if name == "vae":
        return VaeDecoder(vae)
    if name == "taesd":
        if models_dir is None:
            raise WeightsError("the TAESD decoder needs a models directory")
        return TaesdDecoder(load_taesd(models_dir, device, dtype))
    raise ValueError(f"unknown decoder {name!r}; expected one of {', '.join(DECODERS)}")


def apply_speed_options(renderer: Any, *, channels_last: bool = False, compile_mode: str | None = None) -> list[str]:
    """GPU speed options for a MuseTalk renderer, each off by default; returns what was applied.

    `channels_last`: NHWC memory format for the UNet and decoder (tensor cores prefer it; slower on CPU).
    `compile_mode`: torch.compile the UNet and the decoder for fixed batch shapes (use a batcher with
    `pad_batches=True` so only a few shapes occur); "reduce-overhead" captures CUDA graphs as well.
    """
    import torch

    done = []
    if channels_last:
        renderer.unet.to(memory_format=torch.channels_last)
        renderer.decoder.model.to(memory_format=torch.channels_last)
        done.append("channels_last")
    if compile_mode:
        renderer.unet = torch.compile(renderer.unet, mode=compile_mode, dynamic=False)
        renderer.decoder.compile(compile_mode)
        done.append(f"compile:{compile_mode}")
    return done
