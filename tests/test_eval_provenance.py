"""Runs record how their numbers were made; `eval compare` warns when two runs were made differently."""

from __future__ import annotations

from workbench.evaluation import provenance


def _meta(**over):
    block = provenance.provenance(
        {"commit": "abc", "dirty": False},
        {"python": "3.11", "cuda": False},
        "auto",
        "dlib",
        ["dlib-hog"],
        {"syncnet_v2.model": "none", "sfd_face.pth": "none"},
    )
    block.update(over)
    return {"provenance": block}


def test_provenance_records_every_ingredient():
    p = _meta()["provenance"]
    for key in ("git_commit", "packages", "ffmpeg", "frame_rate", "crop_scheme", "detector", "weights", "device"):
        assert p[key] not in (None, "", {}), key
    assert "numpy" in p["packages"]
    assert "25" in p["frame_rate"] and "crop_scale" in p["crop_scheme"]


def test_differences_name_what_changed():
    a = _meta()
    assert provenance.differences(a, _meta()) == []
    b = _meta(ffmpeg="7.1", detector={"requested": "s3fd", "used": ["s3fd"]})
    diffs = provenance.differences(a, b)
    assert any(d.startswith("ffmpeg:") and "7.1" in d for d in diffs)
    assert any(d.startswith("detector.requested:") for d in diffs)
    assert provenance.differences({}, a) == [
        "the baseline records no provenance (made before it was recorded): the two may not be comparable"
    ]
