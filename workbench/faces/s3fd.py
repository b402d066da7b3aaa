"""S3FD face detector (Zhang et al., "S3FD: Single Shot Scale-invariant Face Detector", ICCV 2017).

One network, two published files with different key names and two small architectural differences:
- "syncnet": `sfd_face.pth` from syncnet_python's `detectors/s3fd` (the SyncNet evaluation protocol). The VGG16
  trunk is one `vgg` ModuleList with fc6 as a 3x3 convolution of dilation 6 and pool3 in ceil mode; heads are
  `loc.i` / `conf.i`, taps `L2Norm3_3`…, extra layers `extras.i`.
- "face_alignment": `s3fd-619a316812.pth` from face-alignment (the `face_detection` package MuseTalk vendors):
  layers named `conv1_1`…`fc7`, `conv6_1`…, `*_mbox_conf` / `*_mbox_loc`; fc6 is a 3x3 convolution with padding 3 and
  no dilation (its map is 4 cells larger than the stride-32 grid) and every pool rounds down.
Both predict on six maps (strides 4…128, square anchors 16…512) with L2-normalised conv3_3/conv4_3/conv5_3 taps; the
first confidence head gives 3 background logits and 1 face logit ("max-out background label").

Processing follows each file's own pipeline, so its published numbers can be reproduced:
- syncnet_python: the frame resized by `scale`, RGB order minus the per-colour VGG means (R 123, G 117, B 104); per
  scale faces above 0.05 → NMS at IoU 0.3 (top 5000 in, 750 out) → `conf_th`; all scales merged by NMS at IoU 0.1.
- face-alignment: the full frame in BGR order minus the same means; faces above 0.05 (the best 5000, a bound the
  original lacks) → NMS at IoU 0.3 with inclusive pixel areas (w = x2 - x1 + 1) → `conf_th` (0.5 in face-alignment). MuseTalk's batched copy of this path reverses
  the channels before subtracting the BGR means; we keep the Caffe convention the weights were trained with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.faces.checkpoints import (
    FaceModelInputError,
    check_bgr_image,
    extract_state_dict,
    load_strict,
    read_checkpoint,
    resolve_device,
)

Layout = Literal["syncnet", "face_alignment"]

# syncnet_python run_pipeline.py: detect_faces(image, conf_th=0.9, scales=[facedet_scale=0.25])
SYNCNET_CONF_TH = 0.9
SYNCNET_SCALES = (0.25,)
DEFAULT_SCALES: dict[str, tuple[float, ...]] = {"syncnet": SYNCNET_SCALES, "face_alignment": (1.0,)}

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)  # Caffe VGG means
STEPS = (4, 8, 16, 32, 64, 128)
MIN_SIZES = (16, 32, 64, 128, 256, 512)
VARIANCES = (0.1, 0.2)
PRE_NMS_CONF = 0.05
PER_SCALE_NMS_IOU = 0.3
PER_SCALE_TOP_K = 750
PRE_NMS_TOP_K = 5000
MERGE_NMS_IOU = 0.1

# VGG16 conv channels; "M" max-pool, "C" pool3 (ceil mode in the syncnet file, keeps odd sizes)
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512, "M")
_VGG16_CONV_NAMES = (
    "conv1_1",
    "conv1_2",
    "conv2_1",
    "conv2_2",
    "conv3_1",
    "conv3_2",
    "conv3_3",
    "conv4_1",
    "conv4_2",
    "conv4_3",
    "conv5_1",
    "conv5_2",
    "conv5_3",
    "fc6",
    "fc7",
)
_SOURCE_NAMES = ("conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2")


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (ParseNet), for the shallow taps."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)


def _vgg_trunk(layout: Layout) -> tuple[nn.ModuleList, dict[int, str], list[int]]:
    """The VGG16 trunk with fc6/fc7 as convolutions, the indices after which the normalised taps are read, and the
    ModuleList index of each convolution (for the face-alignment names)."""
    layers: list[nn.Module] = []
    in_ch = 3
    conv_indices: list[int] = []
    taps: dict[int, str] = {}
    for item in _VGG16:
        if item == "M" or item == "C":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=item == "C" and layout == "syncnet"))
        else:
            conv_indices.append(len(layers))
            layers += [nn.Conv2d(in_ch, int(item), 3, 1, padding=1), nn.ReLU(inplace=True)]
            in_ch = int(item)
            if len(conv_indices) in (7, 10, 13):  # conv3_3, conv4_3, conv5_3
                taps[len(layers) - 1] = {7: "L2Norm3_3", 10: "L2Norm4_3", 13: "L2Norm5_3"}[len(conv_indices)]
    fc6 = (
        nn.Conv2d(512, 1024, 3, 1, padding=6, dilation=6)
        if layout == "syncnet"
        else nn.Conv2d(512, 1024, 3, 1, padding=3)
    )
    conv_indices += [len(layers), len(layers) + 2]
    layers += [fc6, nn.ReLU(inplace=True), nn.Conv2d(1024, 1024, 1, 1), nn.ReLU(inplace=True)]  # fc6, fc7
    return nn.ModuleList(layers), taps, conv_indices


def face_alignment_key_map() -> dict[str, str]:
    """face-alignment's parameter names → this module's (the syncnet file's) names."""
    _, _, conv_indices = _vgg_trunk("syncnet")
    names: dict[str, str] = {}
    for name, idx in zip(_VGG16_CONV_NAMES, conv_indices, strict=True):
        names[name] = f"vgg.{idx}"
    for i, name in enumerate(("conv6_1", "conv6_2", "conv7_1", "conv7_2")):
        names[name] = f"extras.{i}"
    for stage in ("3_3", "4_3", "5_3"):
        names[f"conv{stage}_norm"] = f"L2Norm{stage}"
    for i, source in enumerate(_SOURCE_NAMES):
        names[f"{source}_mbox_conf"] = f"conf.{i}"
        names[f"{source}_mbox_loc"] = f"loc.{i}"
    out = {}
    for theirs, ours in names.items():
        suffixes = ("weight",) if theirs.endswith("_norm") else ("weight", "bias")
        out.update({f"{theirs}.{s}": f"{ours}.{s}" for s in suffixes})
    return out


def layout_of(state: Mapping[str, torch.Tensor]) -> Layout:
    """Which published file a state dict comes from, by its key names."""
    return "face_alignment" if "conv1_1.weight" in state else "syncnet"


class S3FDNet(nn.Module):
    """The network; `forward` returns raw (loc offsets, conf logits) per source map, `S3FD` decodes them."""

    def __init__(self, layout: Layout = "syncnet") -> None:
        super().__init__()
        if layout not in DEFAULT_SCALES:
            raise ValueError(f"unknown S3FD layout {layout!r}: 'syncnet' or 'face_alignment'")
        self.layout = layout
        self.vgg, self._taps, _ = _vgg_trunk(layout)
        self.L2Norm3_3 = L2Norm(256, 10)
        self.L2Norm4_3 = L2Norm(512, 8)
        self.L2Norm5_3 = L2Norm(512, 5)
        self.extras = nn.ModuleList(
            [
                nn.Conv2d(1024, 256, 1, 1),
                nn.Conv2d(256, 512, 3, 2, padding=1),
                nn.Conv2d(512, 128, 1, 1),
                nn.Conv2d(128, 256, 3, 2, padding=1),
            ]
        )
        source_channels = (256, 512, 512, 1024, 512, 256)
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, 1, padding=1) for c in source_channels])
        self.conf = nn.ModuleList(
            [nn.Conv2d(c, 4 if i == 0 else 2, 3, 1, padding=1) for i, c in enumerate(source_channels)]
        )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        sources: list[torch.Tensor] = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self._taps:
                sources.append(getattr(self, self._taps[i])(x))
        sources.append(x)
        for k, layer in enumerate(self.extras):
            x = F.relu(layer(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        locs = [head(s) for head, s in zip(self.loc, sources, strict=True)]
        confs = [head(s) for head, s in zip(self.conf, sources, strict=True)]
        # max-out background label: the smallest anchors see mostly background, so three logits compete for it
        bg = confs[0][:, :3].amax(dim=1, keepdim=True)
        confs[0] = torch.cat([bg, confs[0][:, 3:]], dim=1)
        return locs, confs


def prior_boxes(feature_sizes: Sequence[tuple[int, int]], image_hw: tuple[int, int]) -> np.ndarray:
    """(P, 4) priors (cx, cy, w, h) normalised by the image size, row-major per map, maps in order.

    Computed as syncnet_python's PriorBox computes them, (j + 0.5) / (imw / step) in doubles rounded to float32, so
    the boxes agree with the reference's to the bit rather than to a float32 ulp (a crop edge rounds on them)."""
    imh, imw = image_hw
    out = []
    for k, (fh, fw) in enumerate(feature_sizes):  # the first len(feature_sizes) of the six maps
        step, size = STEPS[k], MIN_SIZES[k]
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = (xs.ravel() + 0.5) / (imw / step)
        cy = (ys.ravel() + 0.5) / (imh / step)
        wh = np.broadcast_to([size / imw, size / imh], (cx.size, 2))
        out.append(np.column_stack([cx, cy, wh]))
    return np.concatenate(out).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: tuple[float, float] = VARIANCES) -> np.ndarray:
    """SSD box decoding: offsets (P, 4) relative to priors (cx, cy, w, h) → corners (x1, y1, x2, y2).

    In torch and in the published order (x2 = x1 + w, not cx + w / 2; torch's exp), as both S3FD pipelines decode,
    so the corners are theirs to the bit."""
    loc_t = torch.from_numpy(np.ascontiguousarray(loc))
    pri = torch.from_numpy(np.ascontiguousarray(priors)).to(loc_t.dtype)
    boxes = torch.cat(
        (pri[:, :2] + loc_t[:, :2] * variances[0] * pri[:, 2:], pri[:, 2:] * torch.exp(loc_t[:, 2:] * variances[1])),
        1,
    )
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes.numpy()


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None = None, inclusive: bool = False
) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, best first. Keeps boxes with IoU <= threshold.

    `inclusive` counts both edge pixels (w = x2 - x1 + 1), the py-faster-rcnn convention face-alignment uses.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if top_k is not None:
        order = order[:top_k]
    one = 1.0 if inclusive else 0.0
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one, 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one, 0, None)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


class S3FD:
    """Face detector over BGR frames; `detect` returns (K, 5) float32 rows x1, y1, x2, y2, score in pixels."""

    def __init__(self, net: S3FDNet, device: torch.device) -> None:
        self.net = net.to(device).eval()
        self.device = device

    @property
    def layout(self) -> Layout:
        return self.net.layout

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device | None = None) -> S3FD:
        """Load `sfd_face.pth` (syncnet_python) or `s3fd-619a316812.pth` (face-alignment); plain state dicts."""
        state = extract_state_dict(read_checkpoint(path), path)
        layout = layout_of(state)
        if layout == "face_alignment":
            names = face_alignment_key_map()
            state = {names.get(k, k): v for k, v in state.items()}
        net = S3FDNet(layout)
        load_strict(net, state, path, f"S3FD ({layout} layout)")
        return cls(net, resolve_device(device))

    def _candidates(self, frame_bgr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (pixels of the frame) and face scores of every prior scoring above 0.05 at one scale."""
        h, w = frame_bgr.shape[:2]
        img = (
            frame_bgr
            if scale == 1
            else cv2.resize(frame_bgr, dsize=(0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        )
        if img.shape[0] < 1 or img.shape[1] < 1:
            raise FaceModelInputError(f"scale {scale} leaves nothing of a {w}x{h} frame")
        x = img.astype(np.float32) - MEAN_BGR
        if self.layout == "syncnet":  # syncnet_python feeds RGB (its pipeline converts before detecting)
            x = x[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(self.device)
        with torch.inference_mode():
            locs, confs = self.net(x)
        sizes = [tuple(t.shape[2:]) for t in locs]
        loc = torch.cat([t[0].permute(1, 2, 0).reshape(-1, 4) for t in locs]).float().cpu().numpy()
        conf = torch.cat([t[0].permute(1, 2, 0).reshape(-1, 2) for t in confs]).float()
        score = torch.softmax(conf, dim=1)[:, 1].cpu().numpy()
        keep = np.flatnonzero(score > PRE_NMS_CONF)
        boxes = decode_boxes(loc[keep], prior_boxes(sizes, img.shape[:2])[keep])
        return boxes * np.array([w, h, w, h], dtype=np.float32), score[keep]

    def detect(self, frame_bgr: np.ndarray, conf_th: float = 0.5, scales: Sequence[float] | None = None) -> np.ndarray:
        """Faces in one BGR frame, best first; `scales` defaults to the file's own pipeline (0.25 syncnet, 1.0
        face-alignment). For syncnet_python's protocol pass `SYNCNET_CONF_TH`."""
        check_bgr_image(frame_bgr, "frame")
        scales = DEFAULT_SCALES[self.layout] if scales is None else tuple(scales)
        if not scales or any(s <= 0 for s in scales):
            raise FaceModelInputError(f"scales must be positive, got {tuple(scales)}")
        found = []
        for s in scales:
            boxes, scores = self._candidates(frame_bgr, float(s))
            if self.layout == "syncnet":
                keep = nms(boxes, scores, PER_SCALE_NMS_IOU, top_k=PRE_NMS_TOP_K)[:PER_SCALE_TOP_K]
                keep = keep[scores[keep] > conf_th]
            else:
                keep = np.arange(len(scores))
            found.append(np.column_stack([boxes[keep], scores[keep]]))
        dets = np.concatenate(found).astype(np.float32)
        if self.layout == "syncnet":
            keep = nms(dets[:, :4], dets[:, 4], MERGE_NMS_IOU)
        else:
            # face-alignment has no cap; 5000 only binds on garbage input (trained weights leave a few hundred)
            keep = nms(dets[:, :4], dets[:, 4], PER_SCALE_NMS_IOU, top_k=PRE_NMS_TOP_K, inclusive=True)
            keep = keep[dets[keep, 4] > conf_th]
        return dets[keep]
