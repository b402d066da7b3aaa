"""Avatars: a source video or photo becomes a prepared avatar (stage 1 of the data path).

`model` (PrepParams, Avatar: the data every later stage reads), `masks` (MuseTalk's blending masks),
`pipeline` (the one preparation pipeline: frames → detections → boxes → crops → masks → latents),
`store` (prepared avatars on disk; it only stores).
"""
