"""Faces: detection and 68 landmarks, MuseTalk's face box, and the official face models (DWPose, S3FD, BiSeNet)."""

from workbench.faces.boxes import bbox_range, face_box, landmark_box
from workbench.faces.landmarks import Detection, DlibDetector, LandmarkDetector, get_detector

__all__ = ["Detection", "DlibDetector", "LandmarkDetector", "bbox_range", "face_box", "get_detector", "landmark_box"]
