"""Avatar preparation on the real samples, photos, folders, faceless and partly faceless clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from workbench.avatars.model import PrepParams
from workbench.avatars.pipeline import (
    Detections,
    NoFaceError,
    PreparationError,
    build_avatar,
    detect_faces,
    fill_missing,
    prepare_avatar,
)
from workbench.faces.boxes import face_box
from workbench.faces.landmarks import Detection, LandmarkDetector
from workbench.media import MediaError, read_video, write_video


def check_consistent(avatar, n: int) -> None:
    assert len(avatar) == n
    h, w = avatar.frame_size
    assert avatar.boxes.shape == (n, 4) and avatar.boxes.dtype == np.int32
    assert avatar.landmarks.shape == (n, 68, 2) and avatar.landmarks.dtype == np.float32
    assert avatar.has_face.shape == (n,) and avatar.has_face.dtype == bool
    assert avatar.crops.shape == (n, 256, 256, 3) and avatar.crops.dtype == np.uint8
    assert avatar.masks.shape == (n, 256, 256) and avatar.masks.dtype == np.uint8
    x1, y1, x2, y2 = avatar.boxes.T
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= w) & (0 <= y1) & (y1 < y2) & (y2 <= h))


@pytest.mark.parametrize("avatar_name", ["yongen_avatar", "sun_avatar"])
def test_real_faces_are_found_with_plausible_landmarks(request, avatar_name):
    avatar = request.getfixturevalue(avatar_name)
    check_consistent(avatar, 50)
    assert avatar.has_face.all()
    assert avatar.latents is None and avatar.mask_kind == "landmarks"
    for i in range(len(avatar)):
        lm, (x1, y1, x2, y2) = avatar.landmarks[i], avatar.boxes[i]
        mouth, eyes, nose_tip, chin = lm[48:68], lm[36:48], lm[30], lm[8]
        assert np.all((mouth[:, 0] >= x1) & (mouth[:, 0] <= x2) & (mouth[:, 1] >= y1) & (mouth[:, 1] <= y2))
        assert eyes[:, 1].max() < nose_tip[1] < mouth[:, 1].min() < chin[1]
        assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # the person's right eye is on the image's left
        # the box's middle is landmark 29 (bbox_shift 0); the bottom is the chin plus v1.5's extra margin of 10
        assert abs((y1 + (y2 - 10)) / 2 - int(lm[29, 1])) <= 1
    # the face moves little between frames of a talking-head clip
    assert np.abs(np.diff(avatar.landmarks[:, 30], axis=0)).max() < 30
    lo, hi = avatar.bbox_range
    assert lo < 0 < hi


def test_crops_are_the_boxes_resized_with_lanczos(sun_avatar):
    i = 10
    x1, y1, x2, y2 = sun_avatar.boxes[i]
    want = cv2.resize(sun_avatar.frames[i][y1:y2, x1:x2], (256, 256), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(sun_avatar.crops[i], want)


def test_bbox_shift_changes_only_the_parameter_dependent_part(samples_dir, dlib_detector):
    frames, fps = read_video(samples_dir / "sun.mp4", max_frames=4)
    det = detect_faces(frames, dlib_detector)
    base = build_avatar(frames, fps, det, PrepParams(), avatar_id="a" * 16, source="sun.mp4")
    shifted = build_avatar(frames, fps, det, PrepParams(bbox_shift=6), avatar_id="b" * 16, source="sun.mp4")
    assert np.array_equal(base.landmarks, shifted.landmarks)
    assert np.array_equal(base.boxes[:, 2:], shifted.boxes[:, 2:])
    assert np.array_equal(shifted.boxes[:, 1], base.boxes[:, 1] + 12)  # the mirror moves twice the shift
    assert base.bbox_range == shifted.bbox_range
    assert not np.array_equal(base.crops, shifted.crops)


class CountingEncoder:
    """A VAE stand-in: a (B, 8, 32, 32) latent whose values follow the crop, recording each batch size."""

    identity = "test-encoder"

    def __init__(self):
        self.batches = []

    def __call__(self, crops):
        self.batches.append(len(crops))
        small = crops.reshape(len(crops), 32, 8, 32, 8, 3).mean(axis=(2, 4)).astype(np.float32) / 255.0
        z = np.concatenate([small, small, small[..., :2]], axis=-1)  # 8 channels
        return np.ascontiguousarray(z.transpose(0, 3, 1, 2))


def test_vae_encoder_is_called_in_batches(samples_dir, dlib_detector):
    enc = CountingEncoder()
    seen = []
    avatar = prepare_avatar(
        samples_dir / "sun.mp4",
        PrepParams(max_frames=11),
        dlib_detector,
        vae_encoder=enc,
        progress=lambda f, m: seen.append(f),
        vae_batch_size=4,
    )
    assert enc.batches == [4, 4, 3]
    assert avatar.latents.shape == (11, 8, 32, 32) and avatar.latents.dtype == np.float32
    assert np.allclose(avatar.latents[7, 0], avatar.crops[7, ..., 0].reshape(32, 8, 32, 8).mean(axis=(1, 3)) / 255)
    assert seen[-1] == 1.0 and all(b >= a - 1e-9 for a, b in zip(seen, seen[1:], strict=False))


def test_bad_encoder_output_is_refused(samples_dir, dlib_detector):
    with pytest.raises(PreparationError, match="expected"):
        prepare_avatar(
            samples_dir / "sun.mp4",
            PrepParams(max_frames=2),
            dlib_detector,
            vae_encoder=lambda crops: np.zeros((len(crops), 4, 32, 32), np.float32),
        )


def test_photo_input(tmp_path, samples_dir, dlib_detector):
    frames, _ = read_video(samples_dir / "yongen.mp4", max_frames=1)
    cv2.imwrite(str(tmp_path / "portrait.jpg"), frames[0])
    avatar = prepare_avatar(tmp_path / "portrait.jpg", PrepParams(), dlib_detector)
    # A photo becomes a short loop of idle motion (workbench/avatars/photo_motion.py, issue 31): every frame has
    # its face, the loop starts on the photo itself and the body loop moves through it.
    from workbench.avatars.photo_motion import LOOP_FRAMES

    check_consistent(avatar, LOOP_FRAMES)
    assert avatar.has_face.all() and avatar.source == "portrait.jpg"
    assert avatar.loop_index(5) == 5
    assert np.abs(avatar.frames[0].astype(int) - cv2.imread(str(tmp_path / "portrait.jpg")).astype(int)).max() <= 1


def test_folder_input_keeps_frame_order(tmp_path, samples_dir, dlib_detector):
    frames, _ = read_video(samples_dir / "sun.mp4", max_frames=11)
    for i, f in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), f)
    avatar = prepare_avatar(tmp_path, PrepParams(max_frames=10), dlib_detector)
    check_consistent(avatar, 10)
    assert np.array_equal(avatar.frames, frames[:10])


def test_video_without_a_face_raises_no_face_error(tmp_path, dlib_detector, ffmpeg):
    gray = [np.full((120, 160, 3), 128, np.uint8) for _ in range(5)]
    write_video(tmp_path / "gray.mp4", gray)
    with pytest.raises(NoFaceError, match="no face found in any of the 5 frame"):
        prepare_avatar(tmp_path / "gray.mp4", PrepParams(), dlib_detector)


def test_frames_without_a_face_borrow_the_nearest_face(samples_dir, dlib_detector):
    frames, _ = read_video(samples_dir / "sun.mp4", max_frames=8)
    frames = frames.copy()
    blank = [0, 1, 4, 7]
    frames[blank] = 128
    avatar = prepare_avatar(frames, PrepParams(), dlib_detector)
    check_consistent(avatar, 8)
    assert avatar.has_face.tolist() == [False, False, True, True, False, True, True, False]
    # 0 and 1 borrow frame 2; 4 is as near to 3 as to 5 and takes the earlier; 7 borrows 6
    for i, src in {0: 2, 1: 2, 4: 3, 7: 6}.items():
        assert np.array_equal(avatar.landmarks[i], avatar.landmarks[src])
        assert np.array_equal(avatar.boxes[i], avatar.boxes[src])
    assert avatar.extras["n_detected"] == 4


def test_fill_missing_unit():
    n = 5
    lm = np.full((n, 68, 2), np.nan, np.float32)
    boxes = np.full((n, 4), np.nan)
    for i in (1, 3):
        lm[i] = i
        boxes[i] = i
    det = Detections("x", boxes, lm, np.array([False, True, False, True, False]))
    b, lms, has = fill_missing(det)
    assert b[:, 0].tolist() == [1, 1, 1, 3, 3] and not np.isnan(lms).any()
    assert has.tolist() == [False, True, False, True, False]
    with pytest.raises(NoFaceError):
        fill_missing(Detections("x", boxes, lm, np.zeros(n, bool)))


class FixedDetector(LandmarkDetector):
    """Returns the same landmarks for every frame: a box the test can compute by hand."""

    name = "fixed"

    def __init__(self, lm):
        self.lm = lm

    def detect(self, frame_bgr):
        return Detection(box=np.array([10, 10, 90, 90.0]), landmarks=self.lm)


def test_detector_contract_and_box_params_flow_through():
    lm = np.zeros((68, 2), np.float32)
    lm[:, 0] = np.linspace(20, 80, 68)
    lm[:, 1] = 50
    lm[8, 1], lm[28, 1], lm[29, 1], lm[30, 1] = 90, 40, 45, 50
    frames = np.zeros((3, 120, 100, 3), np.uint8)
    avatar = prepare_avatar(frames, PrepParams(bbox_shift=-5, extra_margin=7), FixedDetector(lm))
    # mid = 45 - 5 = 40, half = 90 - 40 = 50 → y1 = -10 → 0; y2 = 90 + 7
    assert avatar.boxes.tolist() == [[20, 0, 80, 97]] * 3
    assert np.array_equal(avatar.boxes[0], face_box(lm, frames.shape[1:], -5, 7))
    assert avatar.bbox_range == (-5, 5)


def test_bad_sources(tmp_path, dlib_detector):
    with pytest.raises(MediaError):
        prepare_avatar(tmp_path / "missing.mp4", PrepParams(), dlib_detector)
    with pytest.raises(PreparationError, match="uint8"):
        prepare_avatar(np.zeros((2, 8, 8, 3), np.float32), PrepParams(), dlib_detector)


# --- MuseTalk's detectors (S3FD + DWPose) behind the same contract ---------------------------
class FakeS3FD:
    def __init__(self, dets):
        self.dets = np.asarray(dets, np.float32).reshape(-1, 5)

    def detect(self, frame_bgr):
        return self.dets


class FakePose:
    def __init__(self):
        self.boxes = []

    def landmarks68(self, frame_bgr, box):
        self.boxes.append(box)
        return np.tile(np.arange(68, dtype=np.float32)[:, None], (1, 2))


def test_dwpose_adapter_takes_the_best_s3fd_box_and_whole_frame_landmarks():
    from workbench.faces.landmarks import DWPoseDetector68

    pose = FakePose()
    det = DWPoseDetector68(FakeS3FD([[5, 5, 20, 20, 0.6], [-4, 10, 60, 80, 0.9]]), pose, "fake").detect(
        np.zeros((100, 100, 3), np.uint8)
    )
    assert det.box.tolist() == [0, 10, 60, 80] and det.score == pytest.approx(0.9)
    assert det.landmarks.shape == (68, 2) and det.landmarks[67, 0] == 67
    assert pose.boxes == [None], "MuseTalk runs DWPose on the whole frame"
    assert DWPoseDetector68(FakeS3FD(np.zeros((0, 5))), pose, "fake").detect(np.zeros((8, 8, 3), np.uint8)) is None


def test_dwpose_without_weights_says_what_is_missing(tmp_path):
    from workbench.faces.landmarks import get_detector
    from workbench.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="dw-ll_ucoco_384.pth"):
        get_detector("dwpose", tmp_path)
    (tmp_path / "dwpose").mkdir()
    (tmp_path / "dwpose" / "dw-ll_ucoco_384.pth").write_bytes(b"x")
    with pytest.raises(MissingWeightsError, match="sfd_face.pth"):
        get_detector("dwpose", tmp_path)
    with pytest.raises(ValueError, match="unknown detector"):
        get_detector("mediapipe")


def test_given_detections_skip_the_detector(samples_dir, dlib_detector):
    frames, _ = read_video(samples_dir / "sun.mp4", max_frames=3)
    det = detect_faces(frames, dlib_detector)

    class Refuses(LandmarkDetector):
        name = "refuses"

        def detect(self, frame_bgr):
            raise AssertionError("the detector must not run")

    avatar = prepare_avatar(samples_dir / "sun.mp4", PrepParams(max_frames=3, bbox_shift=3), Refuses(), detections=det)
    assert np.array_equal(avatar.landmarks, det.landmarks)
    with pytest.raises(PreparationError, match="detections for"):
        prepare_avatar(samples_dir / "sun.mp4", PrepParams(max_frames=4), Refuses(), detections=det)


def test_model_identity_of_components():
    from workbench.avatars.pipeline import model_identity

    class Renderer:
        identity = "musetalk-v15-abc123"

        def encode_crops(self, crops):
            return crops

    class Plain:
        def encode(self, crops):
            return crops

    assert model_identity(Renderer().encode_crops) == "musetalk-v15-abc123.encode_crops"
    assert model_identity(Plain().encode).endswith("Plain.encode")
    assert model_identity(None) is None
