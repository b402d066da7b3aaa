"""SyncNet protocol mode against joonson/syncnet_python's own output (tests/fixtures/syncnet/*.json).

The fixtures were made by scripts/make_syncnet_fixtures.py: the reference's run_pipeline.py and
SyncNetInstance.evaluate on seeded random weights in the official formats (testkit.models.make_syncnet_eval_weights),
whose SyncNet heads carry a small trained correction (scripts/train_syncnet_fixture.py) that gives them a true sync
optimum. Here the project's protocol mode runs on the same clips with the same weights and must find the same scenes,
tracks and crop boxes, per-offset distances within 1e-4 and the same offsets; and since those offsets lie inside the
range, clips whose audio was moved by one frame either way must move the offset by one, in the reference's fixtures
and in the project's live results, so a flipped offset sign or a misaligned audio window fails.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from testkit.models import SYNCNET_HEAD_SHA256, make_syncnet_eval_weights
from workbench.evaluation import protocol
from workbench.evaluation.face_track import iou

FIXTURES = Path(__file__).parent / "fixtures" / "syncnet"
ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_syncnet_fixtures", ROOT / "scripts" / "make_syncnet_fixtures.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- the ported steps, by hand ------------------------------------------------------------------
def _box(x, w=200.0):
    return np.array([x, 0.0, x + w, w])


def test_track_shot_keeps_the_reference_quirk_of_skipping_the_face_after_a_removed_one():
    # Three overlapping boxes per frame (NMS at IoU 0.1 would merge them, but a tracker must not care). The
    # reference's `for face in framefaces: ... framefaces.remove(face)` takes the 1st, skips the 2nd (it slid into
    # the removed slot) and takes the 3rd, which overlaps the track's last box from the same frame. So pass 1 takes
    # faces 1 and 3 of every frame and pass 2 takes face 2: two tracks, where "one face per frame" would give three.
    n = 12
    faces = [[(i, _box(0.0)), (i, _box(10.0)), (i, _box(20.0))] for i in range(n)]
    tracks = protocol.track_shot(faces, min_track=5, min_face_size=10)
    assert len(tracks) == 2
    assert all(len(frames) == n and frames[0] == 0 for frames, _ in tracks)
    assert tracks[1][1][0, 0] == 10.0  # the skipped middle face makes the second track
    # with one face per frame there is nothing to skip: one track
    assert len(protocol.track_shot([[(i, _box(0.0))] for i in range(n)], min_track=5, min_face_size=10)) == 1


def test_track_shot_interpolates_gaps_and_drops_short_or_small_tracks():
    faces = [[(i, _box(float(i)))] if i % 3 else [] for i in range(30)]
    (frames, boxes), = protocol.track_shot(faces, min_track=10, min_face_size=100)  # fmt: skip
    assert frames[0] == 1 and frames[-1] == 29 and len(frames) == 29
    np.testing.assert_allclose(boxes[:, 0], frames.astype(float))  # linear over the missing frames
    assert protocol.track_shot(faces, min_track=25, min_face_size=100) == []
    assert protocol.track_shot(faces, min_track=10, min_face_size=250) == []
    assert iou(boxes[0], boxes[1]) > 0.5


def test_scene_cuts_find_a_hard_cut_and_respect_the_minimum_scene_length(tmp_path, ffmpeg):
    import cv2

    path = tmp_path / "cut.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for i in range(60):
        colour = (20, 200, 40) if i < 30 else (200, 30, 220)
        if i == 40:  # a one-frame flash 10 frames after the cut: under min_len, not a scene
            colour = (250, 250, 250)
        w.write(np.full((48, 64, 3), colour, np.uint8))
    w.release()
    cuts, n = protocol.scene_cuts(path)
    assert n == 60 and cuts == [30]
    assert protocol.scenes_from_cuts(cuts, n) == [(0, 30), (30, 60)]


# --- end to end against the reference -----------------------------------------------------------
def _fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("*.json"))


def _unshifted_fixtures() -> list[Path]:
    return [f for f in _fixtures() if json.loads(f.read_text())["clip"]["audio_delay_ms"] == 0]


FRAME_MS = 40  # one frame at the protocol's 25 fps
# The project's live results per fixture clip, kept from the end-to-end tests below so the shift test that follows
# them does not run the protocol again (run alone, it computes what it lacks).
_LIVE: dict[str, object] = {}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("syncnet_eval")
    return folder, make_syncnet_eval_weights(folder)


class _Replay:
    """The reference's own S3FD detections, frame by frame, as a BoxDetector."""

    name = "replay"

    def __init__(self, detections):
        self.detections = detections
        self.i = 0

    def detect(self, frame):
        d = self.detections[self.i]
        self.i += 1
        return np.asarray(d, dtype=np.float64).reshape(-1, 5)


def _run_protocol(want, weights, samples_dir, tmp_path, detector_of):
    from workbench.evaluation.syncnet import SyncNetScorer, load_syncnet

    folder, digests = weights
    if digests != want["weights"]["state_sha256"]:
        # Another torch may draw other numbers from the same seed; with the fixture's torch a mismatch means the
        # recipe changed and the fixtures must be remade, never a skip.
        import torch

        if torch.__version__ != want["torch"]:
            pytest.skip(f"this torch ({torch.__version__}; {want['torch']} made the fixture) draws other weights")
        pytest.fail("the parity weights recipe changed: remake the fixtures with scripts/make_syncnet_fixtures.py")
    src = samples_dir / want["clip"]["source"]
    delay = want["clip"]["audio_delay_ms"]
    clip = _script().make_clip(src, delay, tmp_path / f"clip{'.mkv' if delay else src.suffix}")
    scorer = SyncNetScorer(load_syncnet(folder / "syncnet_v2.model"), "cpu")
    return protocol.score_file(clip, detector_of(folder), scorer, work_dir=tmp_path)


def _live(fixture: Path, weights, samples_dir, tmp_path):
    """The project's result on a fixture's clip (from the reference's detections), computed once per session."""
    if fixture.stem not in _LIVE:
        want = json.loads(fixture.read_text())
        tmp_path.mkdir(parents=True, exist_ok=True)
        _LIVE[fixture.stem] = _run_protocol(want, weights, samples_dir, tmp_path, lambda _: _Replay(want["detections"]))
    return _LIVE[fixture.stem]


def _assert_same(got, want):
    assert got.n_frames == want["n_frames"]
    assert [list(s) for s in got.scenes] == [list(s) for s in want["scenes"]]
    assert len(got.tracks) == len(want["tracks"])
    for g, w in zip(got.tracks, want["tracks"], strict=True):
        assert [int(g.frames[0]), int(g.frames[-1])] == w["frames"]
        np.testing.assert_allclose(g.boxes, w["bbox"], atol=2e-3)  # the fixture rounds to 4 decimals
        np.testing.assert_allclose(g.centre_size, w["crop_centre_size"], atol=2e-3)
        assert g.scores.n_windows == w["n_windows"]
        np.testing.assert_allclose(g.scores.mean_dists, w["mean_dists"], atol=1e-4)
        assert g.scores.offset == w["offset"]
        assert g.scores.min_dist == pytest.approx(w["lse_d"], abs=1e-4)
        assert g.scores.confidence == pytest.approx(w["lse_c"], abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", _fixtures(), ids=lambda p: p.stem)
def test_protocol_mode_reproduces_syncnet_python_from_its_detections(fixture, weights, samples_dir, tmp_path, ffmpeg):
    """Everything after face detection, end to end: 25 fps conversion, JPEG frames, scene split, tracking, the XVID
    crop round trip, cropped audio, MFCC and SyncNet, fed the reference's own S3FD boxes."""
    want = json.loads(fixture.read_text())
    _assert_same(_live(fixture, weights, samples_dir, tmp_path), want)


class _Recording:
    """A BoxDetector that keeps what the wrapped one found, frame by frame."""

    def __init__(self, detector):
        self.detector, self.name, self.found = detector, detector.name, []

    def detect(self, frame):
        d = self.detector.detect(frame)
        self.found.append(np.asarray(d, dtype=np.float64).reshape(-1, 5))
        return d


@pytest.mark.slow
@pytest.mark.parametrize("fixture", _unshifted_fixtures() + [FIXTURES / "syncnet_example_audio_late_200ms.json"],
                         ids=lambda p: p.stem)  # fmt: skip  # a shifted clip's frames are its source's
def test_protocol_mode_reproduces_syncnet_python_with_our_s3fd(fixture, weights, samples_dir, tmp_path, ffmpeg):
    """The whole path including detection: the project's S3FD on the JPEG frames must find the reference's faces,
    frame by frame (same count, boxes and scores), and everything after them must follow."""
    from workbench.evaluation.face_track import S3FDBoxes

    want = json.loads(fixture.read_text())
    rec = {}

    def detector(folder):
        rec["d"] = _Recording(S3FDBoxes(folder / "sfd_face.pth", "cpu"))
        return rec["d"]

    got = _run_protocol(want, weights, samples_dir, tmp_path, detector)
    found, ref = rec["d"].found, want["detections"]
    assert len(found) == len(ref)
    for k, (f, r) in enumerate(zip(found, ref, strict=True)):
        assert f.shape == (len(r), 5), f"frame {k}: {len(f)} faces, the reference {len(r)}"
        # float32 rounding: boxes of ~1000 px carry 1.2e-4 px per ulp, and another CPU's conv kernels round
        # otherwise (seen: 2 ulp on a fresh machine); far below what moves a 224 crop.
        r = np.asarray(r, dtype=np.float64).reshape(-1, 5)
        np.testing.assert_allclose(f[:, :4], r[:, :4], rtol=1e-6, atol=1e-4, err_msg=f"frame {k}: boxes")
        np.testing.assert_allclose(f[:, 4], r[:, 4], atol=1e-5, err_msg=f"frame {k}: scores")
    _assert_same(got, want)


def _shifted_pairs() -> list[tuple[Path, Path, int]]:
    """(unshifted fixture, shifted fixture, audio delay in frames) for every shifted fixture."""
    fx = {f: json.loads(f.read_text())["clip"] for f in _fixtures()}
    base = {c["source"]: f for f, c in fx.items() if c["audio_delay_ms"] == 0}
    return [(base[c["source"]], f, c["audio_delay_ms"] // FRAME_MS) for f, c in fx.items() if c["audio_delay_ms"]]


def test_fixture_offsets_sit_inside_the_range_with_a_clear_optimum():
    """What makes the offsets above mean something: the weights find sync (seeded random heads put every offset at
    the range edge, +-15, with LSE-C ~0.01), so the reference's offset is interior and its minimum stands out."""
    files = _unshifted_fixtures()
    assert len(files) >= 3
    for f in files:
        (t,) = json.loads(f.read_text())["tracks"]
        d = np.sort(np.asarray(t["mean_dists"]))
        assert abs(t["offset"]) <= 10, f"{f.stem}: offset {t['offset']} at or near the range edge"
        assert t["lse_c"] > 3.0, f"{f.stem}: LSE-C {t['lse_c']}, no clear optimum"
        # the best offset beats every other one, its neighbours included, by far more than the lossy steps move
        # a distance (5e-3 for the seeded weights), so a one-frame shift of the audio cannot leave it in place
        assert d[1] - d[0] > 1.0, f"{f.stem}: the runner-up offset only {d[1] - d[0]:.3f} above the best"


def test_reference_offset_moves_with_the_audio_frame_by_frame():
    """Audio delayed by k frames (k = +-1: 40 ms each way, and 5: 200 ms) moves the reference's offset by -k
    (positive offset: audio ahead)."""
    pairs = _shifted_pairs()
    assert {k for _, _, k in pairs} >= {-1, 1}
    for base, shifted, k in pairs:
        b = json.loads(base.read_text())["tracks"][0]["offset"]
        s = json.loads(shifted.read_text())["tracks"][0]["offset"]
        assert s - b == -k, f"{shifted.stem}: offset {s}, unshifted {b}, audio moved {k} frames"


@pytest.mark.slow
@pytest.mark.parametrize("pair", _shifted_pairs(), ids=lambda p: p[1].stem)
def test_our_offset_moves_with_the_audio_frame_by_frame(pair, weights, samples_dir, tmp_path, ffmpeg):
    """The same in the project, computed live: a flipped offset sign would move it the other way."""
    base, shifted, k = pair
    b = _live(base, weights, samples_dir, tmp_path / "base").main.scores.offset
    s = _live(shifted, weights, samples_dir, tmp_path / "shifted").main.scores.offset
    assert abs(b) < 15
    assert s - b == -k, f"{shifted.stem}: our offset {s}, unshifted {b}, audio moved {k} frames"


def test_parity_weights_give_distinct_scores_that_follow_the_frame(weights, samples_dir):
    """What makes the S3FD test above mean something: on a real frame the firing head's anchors score distinctly
    (no tie for an unstable sort to break), the best clears the protocol's 0.9 and others fall under it, the
    silenced heads stay under the 0.05 pre-filter, and another frame moves the scores."""
    import torch

    from testkit.models import SYNCNET_FIRE_HEAD
    from workbench.faces.s3fd import S3FD
    from workbench.media import read_video

    folder, _ = weights
    net = S3FD.from_file(folder / "sfd_face.pth", "cpu").net
    frames, _ = read_video(samples_dir / "syncnet_example.avi", max_frames=60)
    scores = []
    for frame in (frames[0], frames[59]):
        small = cv2.resize(frame, dsize=(0, 0), fx=0.25, fy=0.25, interpolation=cv2.INTER_LINEAR)
        x = (small.astype(np.float32) - np.array([104.0, 117.0, 123.0], np.float32))[:, :, ::-1]
        with torch.inference_mode():
            _, confs = net(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
        per_head = [torch.softmax(c[0], dim=0)[1].flatten().numpy() for c in confs]
        assert all(h.max() < 0.05 for i, h in enumerate(per_head) if i != SYNCNET_FIRE_HEAD)
        scores.append(per_head[SYNCNET_FIRE_HEAD])
    fire = scores[0]
    assert len(fire) >= 4 and fire.max() > 0.9 and fire.min() < 0.9
    assert np.min(np.diff(np.sort(fire))) > 1e-4
    assert np.abs(scores[1] - scores[0]).max() > 1e-3


def test_fixtures_name_the_reference_commit_and_their_maker():
    files = _fixtures()
    assert files, "no SyncNet fixtures: run scripts/make_syncnet_fixtures.py --reference PATH"
    for f in files:
        d = json.loads(f.read_text())
        assert d["reference"]["repository"] == "joonson/syncnet_python" and len(d["reference"]["commit"]) == 40
        assert d["made_by"] == "scripts/make_syncnet_fixtures.py"
        assert d["torch"] and d["ffmpeg"] and d["opencv"]  # the builds whose lossy steps the numbers hold for
        assert set(d["weights"]["state_sha256"]) == {"syncnet_v2.model", "sfd_face.pth"}
        assert d["weights"]["head_correction"]["sha256"] == SYNCNET_HEAD_SHA256  # the committed trained part
        assert all(len(t["mean_dists"]) == 31 for t in d["tracks"])
        assert len(d["detections"]) == d["n_frames"]


def test_write_clip_is_lossless_and_cuts_the_audio_to_the_video(tmp_path, ffmpeg):
    from workbench.media import load_audio, read_video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(10, 32, 48, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)  # 1 s for a 0.4 s video
    clip = protocol.write_clip(tmp_path / "c.mkv", frames, audio)
    back, _ = read_video(clip)
    assert np.array_equal(back, frames)  # FFV1 in BGR -> the protocol's own conversion is the only loss
    a = load_audio(clip)
    assert len(a) == 6400 and np.allclose(a, audio[:6400], atol=1 / 32768 + 1e-6)
