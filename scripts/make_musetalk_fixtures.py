"""Produce tests/fixtures/musetalk/*.npz by running TMElyralab/MuseTalk's own code on real media.

    .venv/bin/python scripts/make_musetalk_fixtures.py --reference /work/ref/musetalk [--site /work/ref/site]

`--reference` is an extracted checkout of https://github.com/TMElyralab/MuseTalk (never part of this
repository); its commit is recorded in the fixtures (`--commit`, default the one these were made from).
`--site` is a folder with the reference's pure-Python imports that this project does not need
(`pip install --target DIR einops omegaconf`).

What runs is the reference's v1.5 real-time path itself: `scripts/realtime_inference.py`'s `Avatar`
(preparation: crops, `VAE.get_latents_for_unet`, the frame cycle, `get_image_prepare_material`;
inference: `AudioProcessor.get_audio_feature` + `get_whisper_chunk`, `PositionalEncoding`, the UNet step,
`VAE.decode_latents`, `get_image_blending`), for `--version v15` and `v1`, with its module globals set as
its `__main__` block sets them, in fp32 on the CPU. Three things are substituted, all outside the maths
under test:
- the detectors (mmpose/mmcv do not install here): `inference_topdown` and `FaceAlignment` are stubs that
  return the landmarks and boxes of this project's dlib detector for the frame, so both sides see the
  same landmarks and the reference's own box rule (`get_landmark_and_bbox`) makes the boxes;
- `torchvision.transforms` (its PyPI wheels do not load beside this CPU torch): `ToTensor`, `Normalize`
  and `Compose`, the three it uses, re-implemented with torchvision's semantics;
- `latent_dist.sample()` is replaced by `.mode()`: the release samples the posterior, which makes
  preparation random; this project uses the mode on purpose (training does too), see the README.

Weights: small random-init models in the official formats, made by `testkit.models` from a fixed seed
(UNet from a reduced musetalk.json, small AutoencoderKL, Whisper-tiny's encoder as published) and a
seeded random BiSeNet; the tests rebuild them from the same seed and check their checksums.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.models import make_bisenet_files, make_tiny_models, weights_checksum  # noqa: E402

DEFAULT_COMMIT = "0a89dec"  # TMElyralab/MuseTalk, the latest commit when these fixtures were made
SEED = 11
N_AVATAR_FRAMES = 3  # the reference cycles them as 0 1 2 2 1 0
ENG_SECONDS = 10
OUT_FRAMES = [0, 3, 104, 197]  # output frames whose UNet output, face and composite are kept (104, 197: past 4 s)
V1_BBOX_SHIFT = 5  # v1.0's knob, non-zero so that it is exercised
BOX_SHIFTS = [-10, -4, 0, 4, 10]


def window_frames(n_frames: int) -> list[int]:
    """The frames whose Whisper windows are kept: one per second, the boundary at 4 s, the last ones."""
    keep = set(range(0, n_frames, 25)) | {99, 100, 101, n_frames - 2, n_frames - 1} | set(OUT_FRAMES)
    return sorted(i for i in keep if 0 <= i < n_frames)


# --- substitutes for what does not install here ------------------------------------------------
class _Landmarks:
    """frame bytes -> (landmarks (68, 2) float32, detector box (x1, y1, x2, y2) ints)."""

    table: dict[bytes, tuple[np.ndarray, tuple[int, int, int, int]]] = {}

    @classmethod
    def key(cls, frame: np.ndarray) -> bytes:
        return hashlib.sha256(np.ascontiguousarray(frame).tobytes()).digest()


def install_stubs() -> None:
    class _Inst:
        def __init__(self, kp):
            self.keypoints = kp

    class _Res:
        def __init__(self, kp):
            self.pred_instances = _Inst(kp)

    def inference_topdown(model, frame):
        lm, _ = _Landmarks.table[_Landmarks.key(frame)]
        kp = np.zeros((1, 133, 2), np.float32)
        kp[0, 23:91] = lm  # DWPose's whole-body face points
        return [_Res(kp)]

    mmpose = types.ModuleType("mmpose")
    apis = types.ModuleType("mmpose.apis")
    apis.inference_topdown = inference_topdown
    apis.init_model = lambda *a, **k: None
    structures = types.ModuleType("mmpose.structures")
    structures.merge_data_samples = lambda results: results[0]
    sys.modules.update({"mmpose": mmpose, "mmpose.apis": apis, "mmpose.structures": structures})

    class FaceAlignment:
        def __init__(self, *a, **k):
            pass

        def get_detections_for_batch(self, images):
            return [_Landmarks.table[_Landmarks.key(img)][1] for img in images]

    fd = types.ModuleType("face_detection")
    fd.FaceAlignment = FaceAlignment
    fd.LandmarksType = types.SimpleNamespace(_2D=1)
    sys.modules["face_detection"] = fd

    class ToTensor:
        def __call__(self, pic):
            a = np.asarray(pic)
            return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div(255)

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, t):
            mean = torch.as_tensor(self.mean, dtype=t.dtype)[:, None, None]
            std = torch.as_tensor(self.std, dtype=t.dtype)[:, None, None]
            return t.sub(mean).div(std)

    class Compose:
        def __init__(self, ts):
            self.ts = ts

        def __call__(self, x):
            for t in self.ts:
                x = t(x)
            return x

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    tr.ToTensor, tr.Normalize, tr.Compose = ToTensor, Normalize, Compose
    tv.transforms = tr
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr})

    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mode()  # see the docstring


# --- the run ------------------------------------------------------------------------------------
def read_cv2_frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="extracted TMElyralab/MuseTalk checkout")
    ap.add_argument("--site", type=Path, default=None, help="folder with einops + omegaconf (pip --target)")
    ap.add_argument("--commit", default=DEFAULT_COMMIT)
    ap.add_argument("--samples", type=Path, default=ROOT.parent / "shared" / "samples")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "musetalk")
    args = ap.parse_args()
    ref = args.reference.resolve()
    if not (ref / "scripts" / "realtime_inference.py").is_file():
        sys.exit(f"{ref} is not a MuseTalk checkout (no scripts/realtime_inference.py)")
    samples = args.samples.resolve()
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    from workbench.faces.landmarks import get_detector

    work = Path(tempfile.mkdtemp(prefix="musetalk-ref-"))
    models = make_tiny_models(work / "models", seed=SEED, versions=("v15", "v1"), vae_format="bin")
    make_bisenet_files(work / "models" / "face-parse-bisent", seed=SEED)
    checksums = weights_checksum(work / "models")

    # frames, as the reference reads them (cv2), and the landmarks both sides are given
    frames = read_cv2_frames(samples / "yongen.mp4", N_AVATAR_FRAMES)
    det = get_detector("dlib")
    landmarks, det_boxes = [], []
    for f in frames:
        d = det.detect(f)
        if d is None:
            sys.exit("dlib found no face in a yongen.mp4 frame")
        landmarks.append(np.asarray(d.landmarks, np.float32))
        det_boxes.append(tuple(int(round(v)) for v in d.box))
    landmarks = np.stack(landmarks)
    det_boxes_arr = np.array(det_boxes, np.int32)
    for f, lm, b in zip(frames, landmarks, det_boxes, strict=True):
        _Landmarks.table[_Landmarks.key(f)] = (lm, b)

    install_stubs()
    sys.path.insert(0, str(ref))
    if args.site is not None:
        sys.path.append(str(args.site.resolve()))
    os.chdir(work)  # the reference's paths (./models, ./results) are relative to its working directory
    import scripts.realtime_inference as rt
    from musetalk.utils import preprocessing
    from musetalk.utils.audio_processor import AudioProcessor
    from musetalk.utils.utils import load_all_model
    from transformers import WhisperModel

    frame_dir = work / "frames"
    frame_dir.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(frame_dir / f"{i:08d}.png"), f)
    img_list = [str(frame_dir / f"{i:08d}.png") for i in range(len(frames))]

    # --- the box rule, on the real landmarks and at the edges ---
    box_cases = {}
    for s in BOX_SHIFTS:
        coords, _ = preprocessing.get_landmark_and_bbox(img_list, s)
        box_cases[f"shift_{s}"] = np.array(coords, np.int64)
    h, w = frames[0].shape[:2]
    edge_frames, edge_lm, edge_det = [], [], []
    for name, dx in (
        ("left_edge", -float(landmarks[0, :, 0].min()) - 12.0),
        ("right_edge", w - landmarks[0, :, 0].max() + 12),
    ):
        f = frames[0].copy()
        f[0, 0, 0] ^= 1 + len(edge_frames)  # a distinct frame for the stub's table
        lm = landmarks[0] + np.array([dx, 0], np.float32)
        b = tuple(int(round(v)) for v in (det_boxes[0][0] + dx, det_boxes[0][1], det_boxes[0][2] + dx, det_boxes[0][3]))
        b = (max(b[0], 0), b[1], min(b[2], w), b[3])  # S3FD boxes are clipped to the frame
        _Landmarks.table[_Landmarks.key(f)] = (lm, b)
        p = work / f"{name}.png"
        cv2.imwrite(str(p), f)
        coords, _ = preprocessing.get_landmark_and_bbox([str(p)], 0)
        box_cases[name] = np.array(coords, np.int64)
        edge_lm.append(lm)
        edge_det.append(b)
        edge_frames.append(name)

    # --- audio: 10 s of eng.wav (16 kHz) and all of yongen.wav (48 kHz stereo), at their native rates ---
    eng, eng_sr = sf.read(str(samples / "eng.wav"), dtype="int16", always_2d=True)
    eng_path = work / "eng10.wav"
    sf.write(str(eng_path), eng[: ENG_SECONDS * eng_sr], eng_sr, subtype="PCM_16")
    audio_paths = {"eng10": eng_path, "yongen": samples / "yongen.wav"}

    vae, unet, pe = load_all_model(
        unet_model_path=str(models / "musetalkV15" / "unet.pth"),
        vae_type="sd-vae",
        unet_config=str(models / "musetalkV15" / "musetalk.json"),
        device=torch.device("cpu"),
    )
    whisper = WhisperModel.from_pretrained(str(models / "whisper")).eval().requires_grad_(False)
    audio_processor = AudioProcessor(feature_extractor_path=str(models / "whisper"))
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {
        "reference": "TMElyralab/MuseTalk",
        "commit": args.commit,
        "seed": SEED,
        "torch": torch.__version__,
        "weights_checksum": checksums,
        "n_avatar_frames": N_AVATAR_FRAMES,
        "out_frames": OUT_FRAMES,
        "v1_bbox_shift": V1_BBOX_SHIFT,
        "box_shifts": BOX_SHIFTS,
        "edge_cases": edge_frames,
        "eng_seconds": ENG_SECONDS,
        "frame_sha256": [hashlib.sha256(f.tobytes()).hexdigest() for f in frames],
    }
    with torch.no_grad():
        for name, path in audio_paths.items():
            feats, length = audio_processor.get_audio_feature(str(path), weight_dtype=torch.float32)
            chunks = audio_processor.get_whisper_chunk(feats, "cpu", torch.float32, whisper, length, fps=25)
            keep = window_frames(len(chunks))
            arrays[f"{name}_window_frames"] = np.array(keep)
            arrays[f"{name}_windows"] = chunks[keep].numpy()
            meta[f"{name}_samples_16k"] = int(length)
            meta[f"{name}_n_frames"] = len(chunks)

    arrays["landmarks"] = landmarks
    arrays["detector_boxes"] = det_boxes_arr
    arrays["edge_landmarks"] = np.stack(edge_lm)
    arrays["edge_detector_boxes"] = np.array(edge_det, np.int32)
    for k, v in box_cases.items():
        arrays[f"boxes_{k}"] = v
    np.savez_compressed(out_dir / "common.npz", **arrays)

    for version in ("v15", "v1"):
        run_version(rt, version, models, work, img_list, audio_paths["yongen"], whisper, audio_processor, out_dir)
        print(f"{version}: done")
    meta["files"] = {p.name: p.stat().st_size for p in sorted(out_dir.glob("*.npz"))}
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(meta["files"], indent=2))


def run_version(rt, version, models, work, img_list, audio_path, whisper, audio_processor, out_dir) -> None:
    """The reference's Avatar for one model version: preparation, then inference on yongen.wav."""
    from musetalk.utils.face_parsing import FaceParsing
    from musetalk.utils.utils import load_all_model

    folder, weights = {"v15": ("musetalkV15", "unet.pth"), "v1": ("musetalk", "pytorch_model.bin")}[version]
    vae, unet, pe = load_all_model(
        unet_model_path=str(models / folder / weights),
        vae_type="sd-vae",
        unet_config=str(models / folder / "musetalk.json"),
        device=torch.device("cpu"),
    )
    # the module globals realtime_inference.py's __main__ sets, with its argparse defaults (fp32 on the CPU)
    rt.args = argparse.Namespace(
        version=version,
        extra_margin=10,
        parsing_mode="jaw",
        left_cheek_width=90,
        right_cheek_width=90,
        audio_padding_length_left=2,
        audio_padding_length_right=2,
        skip_save_images=False,
    )
    rt.device = torch.device("cpu")
    rt.vae, rt.unet, rt.pe = vae, unet, pe
    rt.timesteps = torch.tensor([0])
    rt.audio_processor = audio_processor
    rt.weight_dtype = unet.model.dtype
    rt.whisper = whisper
    rt.fp = FaceParsing(left_cheek_width=90, right_cheek_width=90) if version == "v15" else FaceParsing()

    record: dict[str, list[torch.Tensor]] = {"pe": [], "lat_in": [], "unet_out": [], "faces": []}
    pe_forward, unet_forward, decode = pe.forward, unet.model.forward, vae.decode_latents

    def pe_rec(x):
        y = pe_forward(x)
        record["pe"].append(y.clone())
        return y

    def unet_rec(lat, t, encoder_hidden_states):
        record["lat_in"].append(lat.clone())
        y = unet_forward(lat, t, encoder_hidden_states=encoder_hidden_states)
        record["unet_out"].append(y.sample.clone())
        return y

    def decode_rec(latents):
        y = decode(latents)
        record["faces"].append(y.copy())
        return y

    pe.forward, unet.model.forward, vae.decode_latents = pe_rec, unet_rec, decode_rec
    bbox_shift = 0 if version == "v15" else V1_BBOX_SHIFT  # as the reference's __main__ forces
    avatar = rt.Avatar(
        avatar_id=f"fixture_{version}", video_path=str(Path(img_list[0]).parent), bbox_shift=bbox_shift,
        batch_size=8, preparation=True,
    )  # fmt: skip
    avatar.inference(str(audio_path), None, 25, False)

    n = N_AVATAR_FRAMES
    pe_all = torch.cat(record["pe"]).numpy()
    lat_all = torch.cat(record["lat_in"]).numpy()
    unet_all = torch.cat(record["unet_out"]).numpy()
    faces_all = np.concatenate(record["faces"])
    arrays = {
        "boxes": np.array(avatar.coord_list_cycle[:n], np.int64),
        "latents": torch.cat(avatar.input_latent_list_cycle[:n]).numpy(),
        "cycle_latent_index": np.array(
            [
                int(np.argmin([np.abs(lat_all[k] - a[0].numpy()).max() for a in avatar.input_latent_list_cycle[:n]]))
                for k in range(len(lat_all))
            ]
        ),  # fmt: skip
        "n_written": np.array(len(list((Path(avatar.avatar_path) / "tmp").glob("*.png")))),
        "conditions_pe": pe_all[OUT_FRAMES],
        "unet_out": unet_all[OUT_FRAMES],
        "faces": faces_all[OUT_FRAMES],
        "mask_crop_boxes": np.array(avatar.mask_coords_list_cycle[:n], np.int64),
    }
    for i in range(n):
        arrays[f"mask_{i}"] = np.asarray(avatar.mask_list_cycle[i])
    for k in OUT_FRAMES:
        comp = cv2.imread(str(Path(avatar.avatar_path) / "tmp" / f"{k:08d}.png"))
        body = avatar.frame_list_cycle[k % len(avatar.frame_list_cycle)]
        x1, y1, x2, y2 = avatar.coord_list_cycle[k % len(avatar.coord_list_cycle)]
        outside = comp.copy()
        outside[y1:y2, x1:x2] = body[y1:y2, x1:x2]
        if not np.array_equal(outside, body):
            raise RuntimeError(f"the reference changed pixels outside the face box in frame {k}")
        arrays[f"composite_{k}"] = comp[y1:y2, x1:x2]
        arrays[f"composite_box_{k}"] = np.array([x1, y1, x2, y2], np.int64)
    np.savez_compressed(out_dir / f"{version}.npz", **arrays)


if __name__ == "__main__":
    main()
