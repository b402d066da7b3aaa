"""DWPose: RTMPose-l whole-body (133 COCO-WholeBody keypoints) as published in `dw-ll_ucoco_384.pth`.

The model is mmpose's `TopdownPoseEstimator` from MuseTalk's config `rtmpose-l_8xb32-270e_coco-ubody-wholebody-384x288`:
a CSPNeXt-P5 backbone (widen 1.0, deepen 1.0, channel attention, SiLU; only stage 4 is read, 1024 x 12 x 9) and an
RTMCCHead (7x7 conv to 133 maps, ScaleNorm + linear to 256, one gated attention unit, SimCC classifiers over
2x-upsampled x and y bins). Module names equal mmpose's, so the checkpoint's `state_dict` loads with strict keys.

Inference follows mmpose's top-down pipeline as MuseTalk runs it: box → centre/scale padded by 1.25 → aspect ratio
fixed to 288:384 → affine warp to 288x384 → RGB, ImageNet mean/std → network on the crop and on its mirror
(`flip_test=True` in the config) → SimCC argmax / 2.0 → back to frame coordinates. Keypoints 23:91 are the 68 face
points in the iBUG-300W order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from workbench.faces.checkpoints import (
    FaceModelInputError,
    check_bgr_image,
    extract_state_dict,
    load_strict,
    read_checkpoint,
    resolve_device,
)

INPUT_W, INPUT_H = 288, 384  # codec input_size (w, h)
SIMCC_SPLIT_RATIO = 2.0
BBOX_PADDING = 1.25  # mmpose GetBBoxCenterScale default
NUM_KEYPOINTS = 133
FACE_SLICE = slice(23, 91)  # COCO-WholeBody: 17 body, 6 feet, 68 face, 21 + 21 hands
MEAN_RGB = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD_RGB = np.array([58.395, 57.12, 57.375], dtype=np.float32)
BN_EPS = 1e-5  # the config's norm_cfg is SyncBN with torch defaults


def _face_flip_pairs() -> list[tuple[int, int]]:
    """Left/right pairs of the 68-point iBUG-300W layout (indices within the face block)."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw 0..16, 8 is the chin
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows
    pairs += [(31, 35), (32, 34)]  # nostrils; 27..30 (bridge) and 33 (tip) are on the midline
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48 + i, 54 - i) for i in range(3)] + [(55, 59), (56, 58)]  # outer lip
    pairs += [(60, 64), (61, 63), (65, 67)]  # inner lip
    return pairs


def wholebody_flip_indices() -> list[int]:
    """For each of the 133 keypoints, its mirror keypoint (COCO-WholeBody `swap` names)."""
    flip = list(range(NUM_KEYPOINTS))

    def pair(a: int, b: int) -> None:
        flip[a], flip[b] = b, a

    for left in range(1, 17, 2):  # eyes, ears, shoulders, elbows, wrists, hips, knees, ankles: left odd, right even
        pair(left, left + 1)
    for i in range(3):  # big toe, small toe, heel
        pair(17 + i, 20 + i)
    for a, b in _face_flip_pairs():
        pair(23 + a, 23 + b)
    for i in range(21):  # left hand 91..111 mirrors right hand 112..132
        pair(91 + i, 112 + i)
    return flip


# ------------------------------------------------------------------------------------------------ backbone


class ConvModule(nn.Module):
    """mmcv ConvModule: conv (no bias, a norm follows) → BatchNorm → SiLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.activate = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class DepthwiseSeparableConvModule(nn.Module):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(cin, cin, k, groups=cin)
        self.pointwise_conv = ConvModule(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """3x3 conv then a 5x5 depthwise-separable conv, with an identity shortcut in stages 1-3."""

    def __init__(self, channels: int, add_identity: bool) -> None:
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3)
        self.conv2 = DepthwiseSeparableConvModule(channels, channels, 5)
        self.add_identity = add_identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, 1, 0, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.act(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class CSPLayer(nn.Module):
    """Cross Stage Partial layer: half the channels go through the blocks, half are carried over, then fused."""

    def __init__(self, channels: int, num_blocks: int, add_identity: bool) -> None:
        super().__init__()
        mid = channels // 2  # expand_ratio 0.5
        self.main_conv = ConvModule(channels, mid, 1)
        self.short_conv = ConvModule(channels, mid, 1)
        self.final_conv = ConvModule(2 * mid, channels, 1)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, add_identity) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        return self.final_conv(self.attention(fused))


class SPPBottleneck(nn.Module):
    def __init__(self, channels: int, kernel_sizes: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1 = ConvModule(channels, mid, 1)
        self.poolings = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in kernel_sizes])
        self.conv2 = ConvModule(mid * (len(kernel_sizes) + 1), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


class CSPNeXt(nn.Module):
    """CSPNeXt-P5 at widen/deepen 1.0 (the "l" size); returns the stride-32 stage-4 map only (out_indices=(4,))."""

    # in, out, blocks, identity shortcut, SPP
    ARCH_P5 = (
        (64, 128, 3, True, False),
        (128, 256, 6, True, False),
        (256, 512, 6, True, False),
        (512, 1024, 3, False, True),
    )

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvModule(3, 32, 3, stride=2), ConvModule(32, 32, 3), ConvModule(32, 64, 3))
        for i, (cin, cout, n, identity, spp) in enumerate(self.ARCH_P5, start=1):
            layers: list[nn.Module] = [ConvModule(cin, cout, 3, stride=2)]
            if spp:
                layers.append(SPPBottleneck(cout))
            layers.append(CSPLayer(cout, n, identity))
            self.add_module(f"stage{i}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i in range(1, len(self.ARCH_P5) + 1):
            x = getattr(self, f"stage{i}")(x)
        return x


# ------------------------------------------------------------------------------------------------ head


class ScaleNorm(nn.Module):
    """x / (||x|| / sqrt(d)) * g (Nguyen & Salazar, "Transformers without Tears")."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class RTMCCBlock(nn.Module):
    """Gated Attention Unit over the keypoint tokens (self-attention, no relative bias, no RoPE, as configured)."""

    def __init__(self, dim: int = 256, expansion_factor: int = 2, s: int = 128) -> None:
        super().__init__()
        self.e = dim * expansion_factor
        self.s = s
        self.ln = ScaleNorm(dim)
        self.uv = nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.act_fn = nn.SiLU(inplace=True)
        self.res_scale = Scale(dim)
        self.sqrt_s = s**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v, base = torch.split(self.act_fn(self.uv(self.ln(x))), [self.e, self.e, self.s], dim=2)
        q, k = torch.unbind(base.unsqueeze(2) * self.gamma + self.beta, dim=2)
        kernel = torch.square(torch.relu(torch.bmm(q, k.transpose(1, 2)) / self.sqrt_s))
        return self.res_scale(x) + self.o(u * torch.bmm(kernel, v))


class RTMCCHead(nn.Module):
    def __init__(
        self,
        in_channels: int = 1024,
        num_keypoints: int = NUM_KEYPOINTS,
        featuremap_wh: tuple[int, int] = (INPUT_W // 32, INPUT_H // 32),
        hidden: int = 256,
    ) -> None:
        super().__init__()
        flat = featuremap_wh[0] * featuremap_wh[1]
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, 7, 1, 3)
        self.mlp = nn.Sequential(ScaleNorm(flat), nn.Linear(flat, hidden, bias=False))
        self.gau = RTMCCBlock(hidden)
        self.cls_x = nn.Linear(hidden, int(INPUT_W * SIMCC_SPLIT_RATIO), bias=False)
        self.cls_y = nn.Linear(hidden, int(INPUT_H * SIMCC_SPLIT_RATIO), bias=False)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.gau(self.mlp(torch.flatten(self.final_layer(feats), 2)))
        return self.cls_x(tokens), self.cls_y(tokens)


class RTMPoseWholeBody(nn.Module):
    """backbone + head; input (B, 3, 384, 288) normalised RGB, output SimCC logits (B, K, 576), (B, K, 768).

    `num_keypoints` other than 133 builds the body-only RTMPose-l 384x288 models (17 COCO, 26 Halpe) of the same family.
    """

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS) -> None:
        super().__init__()
        self.backbone = CSPNeXt()
        self.head = RTMCCHead(num_keypoints=num_keypoints)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


# ------------------------------------------------------------------------------------------------ geometry


def bbox_to_center_scale(box: Sequence[float], padding: float = BBOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """(x1, y1, x2, y2) → centre and padded (w, h) widened or heightened to the 288:384 input aspect ratio."""
    x1, y1, x2, y2 = (float(v) for v in box)
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float32)
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = INPUT_W / INPUT_H
    scale = np.array([w, w / aspect] if w > h * aspect else [h * aspect, h], dtype=np.float32)
    return center, scale


def warp_matrix(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """2x3 affine from the frame to the 288x384 input: the scale box maps onto the whole input, centre to centre.

    Built like mmpose's get_warp_matrix (three float32 point pairs through cv2.getAffineTransform) so the crop is
    bit-identical to the reference; in closed form it is x' = s (x - cx) + 144, y' = s (y - cy) + 192, s = 288 / w.
    """
    center = np.asarray(center, dtype=np.float32)
    half_w = np.float32(float(scale[0]) * 0.5)
    src = np.stack([center, center + np.float32([-half_w, 0]), center + np.float32([0, -half_w])]).astype(np.float32)
    mid = np.float32([INPUT_W * 0.5, INPUT_H * 0.5])
    dst = np.stack([mid, mid + np.float32([-INPUT_W * 0.5, 0]), mid + np.float32([0, -INPUT_W * 0.5])])
    return cv2.getAffineTransform(src, dst.astype(np.float32))


def input_to_frame(points: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Input-crop pixel coordinates back to the frame (mmpose add_pred_to_datasample)."""
    size = np.array([INPUT_W, INPUT_H], dtype=np.float32)
    return points / size * scale + center - 0.5 * scale


def simcc_decode(
    simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float = SIMCC_SPLIT_RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """SimCC argmax decode (mmpose get_simcc_maximum): (…, K, Wx), (…, K, Wy) → input-pixel (…, K, 2), scores (…, K).

    The score is the smaller of the two maxima; keypoints scoring <= 0 are placed at bin -1, as mmpose does.
    """
    locs = np.stack([simcc_x.argmax(-1), simcc_y.argmax(-1)], axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(-1), simcc_y.max(-1)).astype(np.float32)
    locs[scores <= 0] = -1
    return locs / split_ratio, scores


# ------------------------------------------------------------------------------------------------ detector


class DWPoseDetector:
    """Whole-body keypoints for one person box per frame; `landmarks68` gives the face points MuseTalk uses."""

    def __init__(self, model: RTMPoseWholeBody, device: torch.device, flip_test: bool = True) -> None:
        self.model = model.to(device).eval()
        self.device = device
        self.flip_test = flip_test
        self._flip = torch.tensor(wholebody_flip_indices(), dtype=torch.long, device=device)

    @classmethod
    def from_file(
        cls, path: str | Path, device: str | torch.device | None = None, flip_test: bool = True
    ) -> DWPoseDetector:
        """Load `dw-ll_ucoco_384.pth` (an mmpose checkpoint: {"state_dict": …, "meta": …}, or a bare state dict)."""
        state = extract_state_dict(read_checkpoint(path), path)
        model = RTMPoseWholeBody()
        load_strict(model, state, path, "DWPose RTMPose-l wholebody 384x288")
        return cls(model, resolve_device(device), flip_test=flip_test)

    def _prepare(self, frame_bgr: np.ndarray, box: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        check_bgr_image(frame_bgr, "frame")
        if box is None:  # mmpose inference_topdown without boxes, MuseTalk's call: the whole frame
            h, w = frame_bgr.shape[:2]
            box = (0.0, 0.0, float(w), float(h))
        box = np.asarray(box, dtype=np.float64).ravel()
        if box.size != 4 or not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            raise FaceModelInputError(f"box must be finite (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got {box}")
        center, scale = bbox_to_center_scale(box[:4])
        crop = cv2.warpAffine(frame_bgr, warp_matrix(center, scale), (INPUT_W, INPUT_H), flags=cv2.INTER_LINEAR)
        x = (crop[:, :, ::-1].astype(np.float32) - MEAN_RGB) / STD_RGB
        # contiguous CHW as mmpose packs it: a strided input sends the convolutions down other kernels
        return np.ascontiguousarray(x.transpose(2, 0, 1)), center, scale

    def simcc(self, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """SimCC logits for normalised crops (B, 3, 384, 288), averaged with the mirrored pass when flip_test."""
        with torch.inference_mode():
            sx, sy = self.model(inputs)
            if self.flip_test:  # two passes, as mmpose runs them: batching them together changes the last bits
                fx, fy = self.model(inputs.flip(-1))
                sx = (sx + fx[:, self._flip].flip(-1)) * 0.5
                sy = (sy + fy[:, self._flip]) * 0.5
        return sx.float().cpu().numpy(), sy.float().cpu().numpy()

    def keypoints_batch(
        self, frames_bgr: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, 133, 2) float32 frame coordinates and (N, 133) float32 scores for one box per frame."""
        if len(frames_bgr) != len(boxes):
            raise FaceModelInputError(f"{len(frames_bgr)} frames but {len(boxes)} boxes")
        if not frames_bgr:
            return np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros((0, NUM_KEYPOINTS), np.float32)
        prepared = [self._prepare(f, b) for f, b in zip(frames_bgr, boxes, strict=True)]
        inputs = torch.from_numpy(np.ascontiguousarray(np.stack([p[0] for p in prepared]))).to(self.device)
        sx, sy = self.simcc(inputs)
        locs, scores = simcc_decode(sx, sy)
        points = np.stack([input_to_frame(loc, c, s) for loc, (_, c, s) in zip(locs, prepared, strict=True)])
        return points.astype(np.float32), scores

    def keypoints(self, frame_bgr: np.ndarray, box: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(133, 2) float32 keypoints and (133,) float32 scores; box None uses the whole frame, as MuseTalk does."""
        points, scores = self.keypoints_batch([frame_bgr], [box])
        return points[0], scores[0]

    def landmarks68(self, frame_bgr: np.ndarray, box: Sequence[float] | None = None) -> np.ndarray:
        """The 68 face landmarks (iBUG-300W order) as (68, 2) float32 frame coordinates."""
        return self.keypoints(frame_bgr, box)[0][FACE_SLICE]
