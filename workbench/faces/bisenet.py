"""BiSeNet face parsing (Yu et al., "BiSeNet", ECCV 2018) as trained on CelebAMask-HQ by zllrunning/face-parsing.PyTorch.

The published `79999_iter.pth` is the full state dict of this variant: the spatial path is dropped and the ResNet18
stride-8 feature stands in for it; the context path refines the stride-16 and stride-32 features with attention
refinement modules; a feature fusion module joins both; three BiSeNetOutput heads (the main one and two auxiliary
ones used in training) predict 19 classes. `resnet18-5c106cde.pth` is torchvision's ImageNet ResNet18 that MuseTalk
loads into the backbone before the full checkpoint overwrites it.

Pre-processing follows MuseTalk's `FaceParsing`: RGB, PIL bilinear resize to 512x512, ImageNet mean/std; the label
map is the argmax of the main head, resized back to the input size with nearest-neighbour sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from workbench.faces.checkpoints import (
    FaceModelInputError,
    check_bgr_image,
    extract_state_dict,
    load_strict,
    read_checkpoint,
    resolve_device,
)

# CelebAMask-HQ labels, in the order zllrunning's data preparation numbers them (0 is background)
BACKGROUND = 0
SKIN = 1
L_BROW = 2
R_BROW = 3
L_EYE = 4
R_EYE = 5
EYE_G = 6  # eyeglasses
L_EAR = 7
R_EAR = 8
EAR_R = 9  # earring
NOSE = 10
MOUTH = 11  # inner mouth
U_LIP = 12
L_LIP = 13
NECK = 14
NECK_L = 15  # necklace
CLOTH = 16
HAIR = 17
HAT = 18
LABEL_NAMES = (
    "background",
    "skin",
    "l_brow",
    "r_brow",
    "l_eye",
    "r_eye",
    "eye_g",
    "l_ear",
    "r_ear",
    "ear_r",
    "nose",
    "mouth",
    "u_lip",
    "l_lip",
    "neck",
    "neck_l",
    "cloth",
    "hair",
    "hat",
)
N_CLASSES = len(LABEL_NAMES)

PARSE_SIZE = 512
MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# ------------------------------------------------------------------------------------------------ ResNet18


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet18(nn.Module):
    """ResNet18 without pooling head and classifier; returns the stride 8, 16 and 32 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 64, 128, 256, 512)
        for i in range(1, 5):
            stride = 1 if i == 1 else 2
            self.add_module(
                f"layer{i}",
                nn.Sequential(BasicBlock(widths[i - 1], widths[i], stride), BasicBlock(widths[i], widths[i])),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


def load_imagenet_resnet18(backbone: ResNet18, path: str | Path) -> None:
    """Initialise the backbone from torchvision's `resnet18-5c106cde.pth`; its `fc` classifier is not used."""
    state = extract_state_dict(read_checkpoint(path), path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    load_strict(backbone, state, path, "torchvision ResNet18")


# ------------------------------------------------------------------------------------------------ BiSeNet


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BiSeNetOutput(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class AttentionRefinementModule(nn.Module):
    """Re-weights channels by a sigmoid of their global average (channel attention)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * atten


class ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))
        feat32_sum = self.arm32(feat32) + F.interpolate(avg, feat32.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat * atten + feat


class BiSeNet(nn.Module):
    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)  # auxiliary heads: trained, kept for strict loading
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: torch.Tensor, aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Class logits at the input resolution; with `aux` also the two auxiliary heads' logits."""
        size = x.shape[2:]
        feat8, feat_cp8, feat_cp16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(feat8, feat_cp8)), size, mode="bilinear", align_corners=True)
        if not aux:
            return out
        out16 = F.interpolate(self.conv_out16(feat_cp8), size, mode="bilinear", align_corners=True)
        out32 = F.interpolate(self.conv_out32(feat_cp16), size, mode="bilinear", align_corners=True)
        return out, out16, out32


class FaceParser:
    """19-class CelebAMask-HQ parsing of BGR images; `parse` returns (H, W) uint8 labels (see the constants)."""

    def __init__(self, net: BiSeNet, device: torch.device, size: int = PARSE_SIZE) -> None:
        self.net = net.to(device).eval()
        self.device = device
        self.size = size

    @classmethod
    def from_files(
        cls, model_path: str | Path, resnet_path: str | Path | None = None, device: str | torch.device | None = None
    ) -> FaceParser:
        """Load `79999_iter.pth`; `resnet18-5c106cde.pth`, when given, is checked and loaded first, as MuseTalk does.

        The full checkpoint holds the backbone too, so the ImageNet file changes nothing once it has loaded.
        """
        net = BiSeNet()
        if resnet_path is not None:
            load_imagenet_resnet18(net.cp.resnet, resnet_path)
        state = extract_state_dict(read_checkpoint(model_path), model_path)
        load_strict(net, state, model_path, "BiSeNet face-parsing (79999_iter.pth)")
        return cls(net, resolve_device(device))

    def _tensor(self, img_bgr: np.ndarray) -> torch.Tensor:
        check_bgr_image(img_bgr, "image")
        # PIL's bilinear resize filters over the whole footprint when shrinking, unlike cv2's; MuseTalk uses PIL
        rgb = Image.fromarray(np.ascontiguousarray(img_bgr[:, :, ::-1])).resize(
            (self.size, self.size), Image.Resampling.BILINEAR
        )
        x = (np.asarray(rgb, dtype=np.float32) / 255.0 - MEAN_RGB) / STD_RGB
        return torch.from_numpy(x.transpose(2, 0, 1).copy())

    def logits(self, images_bgr: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 19, size, size) main-head logits for a batch of BGR images of any sizes."""
        if not images_bgr:
            raise FaceModelInputError("no images to parse")
        batch = torch.stack([self._tensor(img) for img in images_bgr]).to(self.device)
        with torch.inference_mode():
            return self.net(batch).float()

    def parse_batch(self, images_bgr: Sequence[np.ndarray]) -> list[np.ndarray]:
        labels = self.logits(images_bgr).argmax(dim=1).to(torch.uint8).cpu().numpy()
        return [
            cv2.resize(lab, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
            for lab, img in zip(labels, images_bgr, strict=True)
        ]

    def parse(self, img_bgr: np.ndarray) -> np.ndarray:
        """(H, W) uint8 CelebAMask-HQ labels for one BGR image, at its own size."""
        return self.parse_batch([img_bgr])[0]
