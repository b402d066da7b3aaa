"""S3FD, DWPose and BiSeNet: official key names, official file containers, pre/post-processing.

Pretrained weights cannot be downloaded here, so every model is built with random weights, saved the way its
published file is laid out, and loaded back through the public loaders with strict key matching.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from workbench.faces import bisenet, dwpose, s3fd
from workbench.faces.checkpoints import CheckpointError, FaceModelInputError, OpaqueObject
from workbench.weights import MissingWeightsError, WeightsError

torch.manual_seed(0)


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _random_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _randomise_bn(module: torch.nn.Module, seed: int = 0) -> None:
    """Fresh BatchNorm statistics are identities; give them values so a wrong load order would show."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sfd_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, s3fd.S3FDNet]:
    net = s3fd.S3FDNet()
    path = tmp_path_factory.mktemp("syncnet") / "sfd_face.pth"
    torch.save(net.state_dict(), path)  # sfd_face.pth is a plain state dict
    return path, net


class _HistoryBuffer:
    """Stands for mmengine.logging.HistoryBuffer, which the real checkpoint's message_hub pickles."""

    def __init__(self) -> None:
        self._log_history = np.array([0.5, 0.25])


def _write_side_effect(path: str) -> None:
    Path(path).write_text("executed")


class _Payload:
    """An object whose unpickling would call a function; the loader must not call it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_write_side_effect, (str(self.marker),))


@pytest.fixture(scope="module")
def dwpose_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dwpose.RTMPoseWholeBody, Path]:
    model = dwpose.RTMPoseWholeBody()
    _randomise_bn(model)
    folder = tmp_path_factory.mktemp("dwpose")
    marker = folder / "payload-ran"
    # an mmengine-style checkpoint: numpy arrays in meta, objects of a class from a module absent at load time
    fake = types.ModuleType("fake_mmengine_logging")
    _HistoryBuffer.__module__ = "fake_mmengine_logging"
    fake._HistoryBuffer = _HistoryBuffer
    sys.modules["fake_mmengine_logging"] = fake
    try:
        ckpt = {
            "meta": {
                "mmengine_version": "0.7.4",
                "dataset_meta": {
                    "flip_indices": dwpose.wholebody_flip_indices(),
                    "sigmas": np.linspace(0.01, 0.1, 133).astype(np.float32),
                },
                "epoch": 270,
            },
            "state_dict": model.state_dict(),
            "message_hub": {"log_scalars": {"train/loss": _HistoryBuffer()}},
            "param_schedulers": [_Payload(marker)],
        }
        path = folder / "dw-ll_ucoco_384.pth"
        torch.save(ckpt, path)
    finally:
        del sys.modules["fake_mmengine_logging"]
        _HistoryBuffer.__module__ = __name__
    return path, model, marker


@pytest.fixture(scope="module")
def detector(dwpose_file) -> dwpose.DWPoseDetector:
    return dwpose.DWPoseDetector.from_file(dwpose_file[0], device="cpu")


@pytest.fixture(scope="module")
def bisenet_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bisenet.BiSeNet, bisenet.ResNet18]:
    folder = tmp_path_factory.mktemp("face-parse-bisent")
    net = bisenet.BiSeNet()
    _randomise_bn(net)
    model_path = folder / "79999_iter.pth"
    torch.save(net.state_dict(), model_path)
    # torchvision's resnet18-5c106cde.pth: backbone keys + the ImageNet classifier, no num_batches_tracked (2017)
    resnet = bisenet.ResNet18()
    _randomise_bn(resnet, seed=1)
    state = {k: v for k, v in resnet.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    resnet_path = folder / "resnet18-5c106cde.pth"
    torch.save(state, resnet_path)
    return model_path, resnet_path, net, resnet


# ------------------------------------------------------------------------------------------------ parameter counts


def test_s3fd_parameter_count_matches_vgg16_and_the_release_layout() -> None:
    net = s3fd.S3FDNet()
    vgg16_convs = sum(_n_params(m) for m in list(net.vgg)[:30])
    assert vgg16_convs == 14_714_688  # VGG16 without its classifier, as Keras/torchvision publish it
    assert _n_params(net) == 22_459_110
    assert len(net.state_dict()) == 65


def test_rtmpose_l_parameter_counts_match_mmpose_model_zoo() -> None:
    backbone = _n_params(dwpose.CSPNeXt())
    # mmpose projects/rtmpose README: RTMPose-l 384x288 27.79 M (17 COCO keypoints), 28.24 M (26 Halpe keypoints)
    assert round((backbone + _n_params(dwpose.RTMCCHead(num_keypoints=17))) / 1e6, 2) == 27.79
    assert round((backbone + _n_params(dwpose.RTMCCHead(num_keypoints=26))) / 1e6, 2) == 28.24
    # the 133-keypoint head differs only in final_layer's output channels (7x7 conv from 1024 channels)
    assert _n_params(dwpose.RTMPoseWholeBody()) == 33_610_919


def test_bisenet_parameter_count_and_resnet18_backbone() -> None:
    net = bisenet.BiSeNet()
    assert _n_params(net.cp.resnet) + 512 * 1000 + 1000 == 11_689_512  # torchvision resnet18 with its fc
    assert _n_params(net) == 13_300_416


# ------------------------------------------------------------------------------------------------ key names


def test_official_key_names_are_used() -> None:
    sfd_keys = set(s3fd.S3FDNet().state_dict())
    assert {
        "vgg.0.weight",
        "vgg.33.bias",
        "L2Norm3_3.weight",
        "extras.3.weight",
        "loc.5.bias",
        "conf.0.weight",
    } <= sfd_keys
    assert s3fd.S3FDNet().conf[0].out_channels == 4  # max-out background: 3 background logits + 1 face

    pose_keys = set(dwpose.RTMPoseWholeBody().state_dict())
    assert {
        "backbone.stem.0.conv.weight",
        "backbone.stem.2.bn.running_var",
        "backbone.stage1.1.blocks.0.conv2.depthwise_conv.conv.weight",
        "backbone.stage4.1.conv2.bn.weight",
        "backbone.stage4.2.attention.fc.bias",
        "head.final_layer.weight",
        "head.mlp.0.g",
        "head.mlp.1.weight",
        "head.gau.uv.weight",
        "head.gau.gamma",
        "head.gau.res_scale.scale",
        "head.gau.ln.g",
        "head.cls_x.weight",
        "head.cls_y.weight",
    } <= pose_keys
    head = dwpose.RTMPoseWholeBody().head
    assert head.cls_x.out_features == 576 and head.cls_y.out_features == 768

    parse_keys = set(bisenet.BiSeNet().state_dict())
    assert {
        "cp.resnet.conv1.weight",
        "cp.resnet.layer4.1.bn2.running_mean",
        "cp.resnet.layer2.0.downsample.0.weight",
        "cp.arm16.conv_atten.weight",
        "cp.conv_avg.bn.weight",
        "ffm.convblk.conv.weight",
        "ffm.conv2.weight",
        "conv_out.conv_out.weight",
        "conv_out16.conv.bn.bias",
        "conv_out32.conv_out.weight",
    } <= parse_keys


# ------------------------------------------------------------------------------------------------ loading


def test_s3fd_loads_plain_state_dict_strictly(sfd_file) -> None:
    path, net = sfd_file
    det = s3fd.S3FD.from_file(path, device="cpu")
    assert _same_weights(det.net, net)
    assert det.device == torch.device("cpu")


def test_dwpose_loads_mmpose_checkpoint_without_mmengine(dwpose_file, detector) -> None:
    path, model, marker = dwpose_file
    assert _same_weights(detector.model, model)
    assert not marker.exists(), "a pickled callable outside the allow-list was executed"


def test_dwpose_checkpoint_meta_is_read_safely(dwpose_file) -> None:
    from workbench.faces.checkpoints import read_checkpoint

    ckpt = read_checkpoint(dwpose_file[0])
    assert ckpt["meta"]["epoch"] == 270
    np.testing.assert_allclose(ckpt["meta"]["dataset_meta"]["sigmas"][[0, -1]], [0.01, 0.1], rtol=1e-6)
    buffer = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, OpaqueObject) and "fake_mmengine_logging" in repr(buffer)
    assert isinstance(ckpt["param_schedulers"][0], OpaqueObject)


def test_dwpose_accepts_bare_state_dict(tmp_path: Path, dwpose_file) -> None:
    path = tmp_path / "bare.pth"
    torch.save(dwpose_file[1].state_dict(), path)
    assert _same_weights(dwpose.DWPoseDetector.from_file(path, "cpu").model, dwpose_file[1])


def test_bisenet_loads_full_checkpoint_and_torchvision_resnet(bisenet_files) -> None:
    model_path, resnet_path, net, resnet = bisenet_files
    parser = bisenet.FaceParser.from_files(model_path, resnet_path, device="cpu")
    assert _same_weights(parser.net, net)  # the full checkpoint wins over the ImageNet initialisation
    backbone = bisenet.ResNet18()
    bisenet.load_imagenet_resnet18(backbone, resnet_path)
    assert _same_weights(backbone, resnet)
    assert _same_weights(bisenet.FaceParser.from_files(model_path, device="cpu").net, net)


def test_wrong_key_set_names_the_file_and_the_keys(tmp_path: Path, sfd_file, bisenet_files) -> None:
    with pytest.raises(CheckpointError, match=r"sfd_face\.pth is not a DWPose .*missing keys \(backbone\."):
        dwpose.DWPoseDetector.from_file(sfd_file[0])

    state = s3fd.S3FDNet().state_dict()
    state["vgg.0.weights"] = state.pop("vgg.0.weight")
    renamed = tmp_path / "renamed.pth"
    torch.save(state, renamed)
    with pytest.raises(CheckpointError) as info:
        s3fd.S3FD.from_file(renamed)
    message = str(info.value)
    assert str(renamed) in message and "1 missing keys (vgg.0.weight)" in message
    assert "1 unexpected keys (vgg.0.weights)" in message

    wrong_classes = tmp_path / "20_classes.pth"
    torch.save(bisenet.BiSeNet(n_classes=20).state_dict(), wrong_classes)
    with pytest.raises(CheckpointError, match=r"20_classes\.pth .*shape mismatches.*conv_out\.conv_out\.weight"):
        bisenet.FaceParser.from_files(wrong_classes)

    with pytest.raises(CheckpointError, match=r"sfd_face\.pth is not a torchvision ResNet18 checkpoint.*missing keys"):
        bisenet.FaceParser.from_files(bisenet_files[0], resnet_path=sfd_file[0])


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match=r"missing.*sfd_face\.pth"):
        s3fd.S3FD.from_file(tmp_path / "sfd_face.pth")
    assert issubclass(CheckpointError, WeightsError)  # one error family for the engine to catch
    corrupt = tmp_path / "79999_iter.pth"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"cannot read weights file .*79999_iter\.pth"):
        bisenet.FaceParser.from_files(corrupt)
    not_tensors = tmp_path / "not_tensors.pth"
    torch.save({"state_dict": {"a": 1}}, not_tensors)
    with pytest.raises(CheckpointError, match="not a plain state dict"):
        dwpose.DWPoseDetector.from_file(not_tensors)


# ------------------------------------------------------------------------------------------------ S3FD


def test_nms_on_constructed_boxes() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # A
            [1, 0, 11, 10],  # B: IoU with A = 90/110 = 0.818
            [20, 20, 30, 30],  # C: disjoint
            [5, 0, 15, 10],  # D: IoU with A = 50/150 = 0.333, with B = 60/140 = 0.43
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.95, 0.5, 0.8])
    assert s3fd.nms(boxes, scores, 0.3).tolist() == [1, 2]  # B wins over A and D; C survives
    assert s3fd.nms(boxes, scores, 0.45).tolist() == [1, 3, 2]  # D's IoU with B (0.43) is under the threshold
    assert s3fd.nms(boxes, scores, 0.9).tolist() == [1, 0, 3, 2]
    assert s3fd.nms(boxes, scores, 0.3, top_k=2).tolist() == [1]
    assert s3fd.nms(np.zeros((0, 4)), np.zeros(0), 0.3).tolist() == []


def test_prior_boxes_and_decode() -> None:
    priors = s3fd.prior_boxes([(4, 5), (2, 3)], (16, 20))
    assert priors.shape == (4 * 5 + 2 * 3, 4)
    np.testing.assert_allclose(priors[0], [2 / 20, 2 / 16, 16 / 20, 16 / 16])
    np.testing.assert_allclose(priors[6], [(1 + 0.5) * 4 / 20, (1 + 0.5) * 4 / 16, 16 / 20, 1])  # row 1, col 1
    np.testing.assert_allclose(priors[20], [4 / 20, 4 / 16, 32 / 20, 32 / 16])  # first cell of the stride-8 map
    boxes = s3fd.decode_boxes(np.zeros((1, 4), np.float32), np.array([[0.5, 0.5, 0.2, 0.4]], np.float32))
    np.testing.assert_allclose(boxes, [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)
    shifted = s3fd.decode_boxes(np.array([[10.0, 0, np.log(2) / 0.2, 0]]), np.array([[0.5, 0.5, 0.2, 0.4]]))
    np.testing.assert_allclose(shifted, [[0.5, 0.3, 0.9, 0.7]], atol=1e-7)  # cx += 10*0.1*0.2, w doubled


class _PlantedS3FD(torch.nn.Module):
    """Stands in for S3FDNet: zero offsets everywhere, one confident face on the stride-4 map at (row, col)."""

    def __init__(self, row: int, col: int, layout: str = "syncnet") -> None:
        super().__init__()
        self.row, self.col, self.layout = row, col, layout
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor):
        self.seen = x.clone()
        sizes = [((x.shape[2] + s - 1) // s, (x.shape[3] + s - 1) // s) for s in s3fd.STEPS]
        locs = [torch.zeros(1, 4, fh, fw) for fh, fw in sizes]
        confs = [torch.zeros(1, 2, fh, fw) for fh, fw in sizes]
        confs[0][0, 1, self.row, self.col] = 10.0  # softmax → 0.99995
        return locs, confs


def test_detect_decodes_a_planted_face_in_frame_pixels() -> None:
    det = s3fd.S3FD(s3fd.S3FDNet(), torch.device("cpu"))
    det.net = _PlantedS3FD(row=5, col=7)
    frame = _random_frame(160, 200)
    out = det.detect(frame, conf_th=0.9, scales=(0.5,))
    # prior centre in the 100x80 input: ((7+0.5)*4, (5+0.5)*4) = (30, 22), size 16 → frame pixels x2
    assert out.dtype == np.float32 and out.shape == (1, 5)
    np.testing.assert_allclose(out[0, :4], [44, 28, 76, 60], atol=1e-3)
    assert out[0, 4] > 0.999
    # every other prior has score 0.5: below conf_th, so it is dropped. At scale 0.25 the same cell is a box twice
    # as large and far away: both survive the merge
    both = det.detect(frame, conf_th=0.9, scales=(0.5, 0.25))
    np.testing.assert_allclose(np.sort(both[:, 0]), [44, 88], atol=1e-3)
    np.testing.assert_allclose(both[both[:, 0] > 80, :4], [[88, 56, 152, 120]], atol=1e-3)


def test_detect_feeds_rgb_minus_vgg_means() -> None:
    det = s3fd.S3FD(s3fd.S3FDNet(), torch.device("cpu"))
    det.net = _PlantedS3FD(0, 0)
    frame = np.zeros((40, 48, 3), np.uint8)
    frame[:] = (10, 20, 200)  # B, G, R
    det.detect(frame, scales=(1.0,))
    # syncnet_python: RGB frame → BGR → minus (104, 117, 123) → back to RGB
    np.testing.assert_allclose(det.net.seen[0, :, 0, 0].numpy(), [200 - 123, 20 - 117, 10 - 104])
    assert det.net.seen.shape == (1, 3, 40, 48)


def test_face_alignment_file_loads_with_its_own_names_and_pipeline(tmp_path: Path) -> None:
    net = s3fd.S3FDNet("face_alignment")
    ours_to_theirs = {v: k for k, v in s3fd.face_alignment_key_map().items()}
    state = {ours_to_theirs[k]: v for k, v in net.state_dict().items()}
    assert {
        "conv1_1.weight",
        "fc6.bias",
        "conv3_3_norm.weight",
        "conv3_3_norm_mbox_conf.weight",
        "fc7_mbox_loc.bias",
        "conv7_2_mbox_conf.weight",
    } <= set(state)
    path = tmp_path / "s3fd-619a316812.pth"
    torch.save(state, path)
    det = s3fd.S3FD.from_file(path, device="cpu")
    assert det.layout == "face_alignment" and _same_weights(det.net, net)
    fc6 = det.net.vgg[31]
    assert (fc6.padding, fc6.dilation) == ((3, 3), (1, 1))  # face-alignment's fc6, not the dilated one
    assert s3fd.S3FDNet().vgg[31].dilation == (6, 6)
    # BGR order, full frame by default
    det.net = _PlantedS3FD(2, 3, layout="face_alignment")
    frame = np.zeros((40, 48, 3), np.uint8)
    frame[:] = (10, 20, 200)
    out = det.detect(frame)
    np.testing.assert_allclose(det.net.seen[0, :, 0, 0].numpy(), [10 - 104, 20 - 117, 200 - 123])
    assert det.net.seen.shape == (1, 3, 40, 48)
    np.testing.assert_allclose(out, [[6, 2, 22, 18, out[0, 4]]], atol=1e-3)  # centre (14, 10), size 16
    # a renamed face-alignment key is reported
    state["fc7.weights"] = state.pop("fc7.weight")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"face_alignment layout.*missing keys \(vgg\.33\.weight\)"):
        s3fd.S3FD.from_file(path)


def test_inclusive_nms_counts_edge_pixels() -> None:
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], dtype=np.float32)  # 10x10 pixels each, overlap 5x10
    scores = np.array([0.9, 0.8])
    # exclusive: 4*9 / (81 + 81 - 36) = 0.286; inclusive: 5*10 / (100 + 100 - 50) = 0.333
    assert s3fd.nms(boxes, scores, 0.3).tolist() == [0, 1]
    assert s3fd.nms(boxes, scores, 0.3, inclusive=True).tolist() == [0]


def test_detect_random_model_output_contract(sfd_file) -> None:
    det = s3fd.S3FD.from_file(sfd_file[0], device="cpu")
    small = _random_frame(48, 64)
    dets = det.detect(small, conf_th=0.0, scales=(1.0,))
    assert dets.ndim == 2 and dets.shape[1] == 5 and dets.dtype == np.float32 and len(dets) > 0
    assert np.all(dets[:, 4] > 0) and np.all(dets[:, 4] <= 1) and np.all(np.diff(dets[:, 4]) <= 0)
    assert np.all(dets[:, 2] > dets[:, 0]) and np.all(dets[:, 3] > dets[:, 1])
    # the final merge leaves no pair overlapping more than IoU 0.1
    assert len(s3fd.nms(dets[:, :4], dets[:, 4], s3fd.MERGE_NMS_IOU)) == len(dets)
    # pixel units: a 2x pixel-replicated frame at scale 0.5 is the same network input, boxes twice as large
    big = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    big_dets = det.detect(big, conf_th=0.0, scales=(0.5,))
    np.testing.assert_allclose(big_dets[:, :4], dets[:, :4] * 2, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(big_dets[:, 4], dets[:, 4], atol=1e-5)
    assert det.detect(small, conf_th=1.0, scales=(1.0,)).shape == (0, 5)


def test_s3fd_rejects_bad_frames(sfd_file) -> None:
    det = s3fd.S3FD.from_file(sfd_file[0], device="cpu")
    with pytest.raises(FaceModelInputError, match="BGR"):
        det.detect(np.zeros((32, 32), np.uint8))
    with pytest.raises(FaceModelInputError, match="uint8"):
        det.detect(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(FaceModelInputError, match="scales"):
        det.detect(np.zeros((32, 32, 3), np.uint8), scales=())


# ------------------------------------------------------------------------------------------------ DWPose


def test_flip_indices_are_the_coco_wholebody_mirror() -> None:
    flip = dwpose.wholebody_flip_indices()
    assert len(flip) == 133 and sorted(flip) == list(range(133))
    assert all(flip[flip[i]] == i for i in range(133))  # an involution
    assert flip[0] == 0 and (flip[1], flip[2]) == (2, 1) and (flip[15], flip[16]) == (16, 15)  # nose, eyes, ankles
    assert (flip[17], flip[22]) == (20, 19)  # left big toe ↔ right big toe, right heel ↔ left heel
    face = [flip[23 + i] - 23 for i in range(68)]
    assert face[:17] == list(range(16, -1, -1))  # jaw reversed
    assert [face[i] for i in (27, 28, 29, 30, 33, 51, 57, 62, 66)] == [27, 28, 29, 30, 33, 51, 57, 62, 66]  # midline
    assert (face[36], face[39], face[40], face[48], face[60]) == (45, 42, 47, 54, 64)  # eye corners, mouth corners
    assert flip[91] == 112 and flip[132] == 111  # hand roots, pinky tips


def test_bbox_to_center_scale_pads_and_fixes_aspect() -> None:
    center, scale = dwpose.bbox_to_center_scale((10, 20, 110, 100))  # 100 x 80 → 125 x 100 → widen height
    np.testing.assert_allclose(center, [60, 60])
    np.testing.assert_allclose(scale, [125, 125 / 0.75])
    center, scale = dwpose.bbox_to_center_scale((0, 0, 30, 100))  # 37.5 x 125 → widen width
    np.testing.assert_allclose(scale, [125 * 0.75, 125])


def test_affine_round_trip_and_pixel_placement() -> None:
    center, scale = dwpose.bbox_to_center_scale((37.0, 52.0, 141.0, 190.0))
    m = dwpose.warp_matrix(center, scale)
    s = dwpose.INPUT_W / scale[0]  # closed form: uniform scale, box centre to input centre
    np.testing.assert_allclose(m, [[s, 0, 144 - s * center[0]], [0, s, 192 - s * center[1]]], rtol=1e-5, atol=1e-3)
    points = np.array([[60.0, 70.0], [140.0, 180.0], [center[0], center[1]]])
    in_crop = points @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(in_crop[2], [144, 192], atol=1e-4)  # the centre lands in the middle of the input
    np.testing.assert_allclose(dwpose.input_to_frame(in_crop.astype(np.float32), center, scale), points, atol=1e-3)
    # cv2.warpAffine with this matrix puts a frame pixel where the matrix says
    frame = np.zeros((240, 200, 3), np.uint8)
    frame[150, 90] = 255
    crop = cv2.warpAffine(frame, m, (dwpose.INPUT_W, dwpose.INPUT_H), flags=cv2.INTER_LINEAR)
    y, x = np.unravel_index(crop[:, :, 0].argmax(), crop.shape[:2])
    expect = np.array([90.0, 150.0]) @ m[:, :2].T + m[:, 2]
    assert abs(x - expect[0]) <= 1 and abs(y - expect[1]) <= 1


def test_simcc_decode_on_constructed_vectors() -> None:
    sx = np.full((1, 3, 576), -1.0, np.float32)
    sy = np.full((1, 3, 768), -1.0, np.float32)
    sx[0, 0, 100], sy[0, 0, 301] = 0.8, 0.6  # score = min(0.8, 0.6)
    sx[0, 1, 575], sy[0, 1, 0] = 0.3, 0.9
    sx[0, 2, 50], sy[0, 2, 60] = 0.5, -0.2  # y maximum below zero → keypoint invalid
    locs, scores = dwpose.simcc_decode(sx, sy)
    np.testing.assert_allclose(locs[0], [[50.0, 150.5], [287.5, 0.0], [-0.5, -0.5]])
    np.testing.assert_allclose(scores[0], [0.6, 0.3, -0.2])
    assert locs.dtype == np.float32 and scores.dtype == np.float32


class _PlantedPose(torch.nn.Module):
    """Stands in for RTMPoseWholeBody: every keypoint peaks at fixed SimCC bins."""

    def __init__(self, bx: int, by: int) -> None:
        super().__init__()
        self.bx, self.by = bx, by

    def forward(self, x: torch.Tensor):
        sx = torch.zeros(x.shape[0], 133, 576)
        sy = torch.zeros(x.shape[0], 133, 768)
        sx[..., self.bx] = 1.0
        sy[..., self.by] = 1.0
        return sx, sy


def test_keypoints_land_in_frame_coordinates() -> None:
    det = dwpose.DWPoseDetector(dwpose.RTMPoseWholeBody(), torch.device("cpu"), flip_test=False)
    det.model = _PlantedPose(bx=288, by=384)  # the centre of the 288x384 input
    frame = _random_frame(200, 160)
    box = (20.0, 30.0, 120.0, 170.0)
    points, scores = det.keypoints(frame, box)
    np.testing.assert_allclose(points, np.tile([70.0, 100.0], (133, 1)), atol=1e-4)  # the box centre
    np.testing.assert_allclose(scores, 1.0)
    det.model = _PlantedPose(bx=0, by=0)  # top-left of the input → top-left of the padded, aspect-fixed box
    _, scale = dwpose.bbox_to_center_scale(box)
    np.testing.assert_allclose(
        det.landmarks68(frame, box), np.tile([70 - scale[0] / 2, 100 - scale[1] / 2], (68, 1)), atol=1e-3
    )
    whole, _ = det.keypoints(frame, None)  # MuseTalk's call: the whole frame is the box
    # 160x200 padded to 200x250, widened to the 3:4 input: 200 x 266.7 around (80, 100)
    np.testing.assert_allclose(whole[0], [80 - 100, 100 - 200 / 0.75 / 2], atol=1e-3)


def test_flip_test_averages_the_mirrored_pass(detector) -> None:
    inputs = torch.randn(1, 3, dwpose.INPUT_H, dwpose.INPUT_W)
    sx, sy = detector.simcc(inputs)
    fx, fy = detector.simcc(inputs.flip(-1))
    flip = dwpose.wholebody_flip_indices()
    # averaging f(x) with the mirrored f(mirror x) makes the prediction exactly mirror-equivariant
    np.testing.assert_allclose(fx, sx[:, flip, ::-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fy, sy[:, flip], rtol=1e-4, atol=1e-4)


def test_dwpose_random_model_output_contract(detector) -> None:
    single_pass = dwpose.DWPoseDetector(detector.model, torch.device("cpu"), flip_test=False)  # half the CPU time
    frame = _random_frame(180, 150)
    box = (10, 20, 130, 170)
    many, many_scores = single_pass.keypoints_batch([frame, frame[:, ::-1].copy()], [box, None])
    assert many.shape == (2, 133, 2) and many.dtype == np.float32
    assert many_scores.shape == (2, 133) and many_scores.dtype == np.float32 and np.all(np.isfinite(many_scores))
    center, scale = dwpose.bbox_to_center_scale(box)
    valid = many_scores[0] > 0
    assert np.all(np.abs(many[0][valid] - center) <= scale / 2 + 1e-3)  # inside the padded box
    np.testing.assert_allclose(single_pass.landmarks68(frame, box), many[0][23:91], atol=1e-3)


def test_dwpose_rejects_bad_input(detector) -> None:
    frame = _random_frame(64, 64)
    with pytest.raises(FaceModelInputError, match="box"):
        detector.keypoints(frame, (10, 10, 5, 40))
    with pytest.raises(FaceModelInputError, match="box"):
        detector.keypoints(frame, (0, 0, float("nan"), 10))
    with pytest.raises(FaceModelInputError, match="frames but"):
        detector.keypoints_batch([frame], [None, None])
    with pytest.raises(FaceModelInputError, match="BGR"):
        detector.landmarks68(frame[:, :, 0], None)


# ------------------------------------------------------------------------------------------------ BiSeNet


def test_label_constants_follow_celebamask_hq() -> None:
    assert bisenet.N_CLASSES == 19 and bisenet.LABEL_NAMES[0] == "background"
    for name in ("skin", "l_brow", "nose", "mouth", "u_lip", "l_lip", "neck", "hair", "hat"):
        assert getattr(bisenet, name.upper()) == bisenet.LABEL_NAMES.index(name)
    assert (bisenet.SKIN, bisenet.NOSE, bisenet.MOUTH, bisenet.U_LIP, bisenet.L_LIP) == (1, 10, 11, 12, 13)


def test_parse_output_contract(bisenet_files) -> None:
    parser = bisenet.FaceParser.from_files(bisenet_files[0], device="cpu")
    parser.size = 128  # the architecture takes any multiple of 32; keeps the CPU test short
    img = _random_frame(90, 70)
    labels = parser.parse(img)
    assert labels.shape == (90, 70) and labels.dtype == np.uint8 and labels.max() < bisenet.N_CLASSES
    logits = parser.logits([img])
    assert logits.shape == (1, 19, 128, 128)
    at_128 = logits.argmax(1)[0].numpy().astype(np.uint8)
    np.testing.assert_array_equal(labels, cv2.resize(at_128, (70, 90), interpolation=cv2.INTER_NEAREST))
    batch = parser.parse_batch([img, _random_frame(40, 50, seed=3)])
    np.testing.assert_array_equal(batch[0], labels)
    assert batch[1].shape == (40, 50)
    with pytest.raises(FaceModelInputError):
        parser.parse(np.zeros((10, 10, 4), np.uint8))


def test_parse_preprocessing_is_imagenet_normalised_rgb(bisenet_files) -> None:
    parser = bisenet.FaceParser.from_files(bisenet_files[0], device="cpu")
    img = np.zeros((20, 30, 3), np.uint8)
    img[:] = (0, 128, 255)  # B, G, R
    x = parser._tensor(img)
    assert x.shape == (3, 512, 512)
    expect = (np.array([255, 128, 0]) / 255.0 - bisenet.MEAN_RGB) / bisenet.STD_RGB
    np.testing.assert_allclose(x[:, 100, 200].numpy(), expect, rtol=1e-5)


def test_bisenet_aux_heads_have_the_input_size() -> None:
    net = bisenet.BiSeNet().eval()
    with torch.inference_mode():
        out, out16, out32 = net(torch.randn(1, 3, 64, 96), aux=True)
    assert out.shape == out16.shape == out32.shape == (1, 19, 64, 96)


def test_device_argument(sfd_file) -> None:
    det = s3fd.S3FD.from_file(sfd_file[0], device=torch.device("cpu"))
    assert next(det.net.parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        assert s3fd.S3FD.from_file(sfd_file[0]).device == torch.device("cpu")  # None → CPU without CUDA
    else:
        gpu = s3fd.S3FD.from_file(sfd_file[0])
        assert gpu.device.type == "cuda"
        np.testing.assert_allclose(
            gpu.detect(_random_frame(48, 64), 0.0, (1.0,)),
            det.detect(_random_frame(48, 64), 0.0, (1.0,)),
            rtol=1e-3,
            atol=1e-2,
        )


def test_pickle_allow_list_does_not_import(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "obj": _Payload(tmp_path / "ran")}, path)
    from workbench.faces.checkpoints import read_checkpoint

    loaded = read_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(2))
    assert not (tmp_path / "ran").exists()
    assert isinstance(loaded["obj"], OpaqueObject)
