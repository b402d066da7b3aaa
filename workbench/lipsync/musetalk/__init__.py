"""MuseTalk v1.5 (or v1.0): Whisper-tiny audio features (`whisper_features`), one UNet step in the VAE latent
space (`renderer`) and the latent → image decoders, the reference VAE or TAESD (`decoders`). torch, diffusers
and transformers load when a model is built, not on import.
"""

from workbench.lipsync.musetalk.decoders import TaesdDecoder, VaeDecoder, make_decoder
from workbench.lipsync.musetalk.renderer import MuseTalkRenderer
from workbench.lipsync.musetalk.whisper_features import AudioInputError, BlockParams, WhisperFrontend

__all__ = [
    "AudioInputError",
    "BlockParams",
    "MuseTalkRenderer",
    "TaesdDecoder",
    "VaeDecoder",
    "WhisperFrontend",
    "make_decoder",
]
