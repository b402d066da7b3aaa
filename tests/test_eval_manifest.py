"""Suite manifests: the shipped example, path resolution, and clear errors for bad manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.evaluation.errors import ManifestError
from workbench.evaluation.manifest import GeneratedCase, LatencyLogCase, ReferenceCase, load_suite, parse_suite

EXAMPLE = Path(__file__).parents[1] / "suites" / "example.yaml"
EXAMPLES = Path(__file__).parents[1] / "examples"


def test_example_suite_resolves_against_its_folder(samples_dir):
    suite = load_suite(EXAMPLE)  # checks every file exists
    kinds = {c.id: c.kind for c in suite.cases}
    assert kinds["yongen_eng"] == "generated" and kinds["syncnet_example"] == "reference"
    files = suite.files_of(next(c for c in suite.cases if c.id == "yongen_eng"))
    assert files["source"] == (EXAMPLES / "yongen.mp4").resolve()
    assert files["audio"] == (EXAMPLES / "speech_en.ogg").resolve()
    ref = next(c for c in suite.cases if c.id == "syncnet_example")
    assert isinstance(ref, ReferenceCase) and ref.audio is None and "latency" not in ref.metrics
    assert suite.files_of(ref)["video"] == (samples_dir / "syncnet_example.avi").resolve()


def test_example_suite_generated_cases_use_only_bundled_media():
    """What a Space runs: every generated case's media are in the repository's examples/."""
    suite = load_suite(EXAMPLE, check_files=False)
    generated = [c for c in suite.cases if c.kind == "generated"]
    assert {c.id for c in generated} == {"yongen_eng", "yongen_yongen", "sun_sun"}
    for c in generated:
        for p in suite.files_of(c).values():
            assert p.parent == EXAMPLES.resolve() and p.is_file(), p


def test_available_leaves_out_cases_with_missing_media(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    suite = parse_suite(
        {
            "name": "s",
            "cases": [
                {"id": "here", "kind": "reference", "video": "a.mp4"},
                {"id": "gone", "kind": "reference", "video": "gone.mp4"},
            ],
        },
        tmp_path,
    )
    kept, skipped = suite.available()
    assert [c.id for c in kept.cases] == ["here"] and skipped == ["gone"]
    only_gone = parse_suite({"name": "s", "cases": [{"id": "gone", "kind": "reference", "video": "g.mp4"}]}, tmp_path)
    with pytest.raises(ManifestError, match=r"gone: video -> .*g\.mp4"):
        only_gone.available()


def test_case_kinds_and_defaults(tmp_path):
    suite = parse_suite(
        {
            "name": "s",
            "cases": [
                {
                    "id": "g",
                    "kind": "generated",
                    "source": "a.mp4",
                    "audio": "a.wav",
                    "renderer": "cpu",
                    "bbox_shift": -3,
                    "batch_size": 4,
                },
                {"id": "r", "kind": "reference", "video": "/abs/v.mp4", "audio_shift_frames": -5},
                {"id": "l", "kind": "latency_log", "log": "logs/s.jsonl"},
            ],
        },
        tmp_path,
    )
    g, r, lg = suite.cases
    assert isinstance(g, GeneratedCase) and g.bbox_shift == -3 and g.extra_margin == 10 and g.metrics[-1] == "latency"
    assert isinstance(r, ReferenceCase) and r.audio_shift_frames == -5
    assert isinstance(lg, LatencyLogCase)
    assert suite.resolve(g.source) == (tmp_path / "a.mp4").resolve()
    assert suite.resolve(r.video) == Path("/abs/v.mp4")
    assert suite.files_of(lg)["log"] == (tmp_path / "logs" / "s.jsonl").resolve()


def test_missing_file_is_named(tmp_path):
    (tmp_path / "s.yaml").write_text("name: s\ncases:\n  - id: c1\n    kind: reference\n    video: nowhere.mp4\n")
    with pytest.raises(ManifestError, match=r"c1: video -> .*nowhere\.mp4"):
        load_suite(tmp_path / "s.yaml")
    assert load_suite(tmp_path / "s.yaml", check_files=False).cases[0].id == "c1"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: s\ncases: []\n", "cases"),
        (
            "name: s\ncases:\n  - {id: a, kind: latency_log, log: x}\n  - {id: a, kind: latency_log, log: y}\n",
            "duplicate case ids: a",
        ),
        ("name: s\ncases:\n  - {id: a, kind: reference, video: v.mp4, colour: red}\n", "colour"),
        ("name: s\ncases:\n  - {id: a, kind: teleport, video: v.mp4}\n", "kind"),
        ("name: s\ncases:\n  - {id: 'bad id!', kind: latency_log, log: x}\n", "case id"),
        ("name: s\ncases:\n  - {id: a, kind: reference, video: v.mp4, metrics: [latency]}\n", "no frame timings"),
        (
            "name: s\ncases:\n  - {id: a, kind: generated, source: s.mp4, audio: a.wav, audio_shift_frames: 40}\n",
            "audio_shift_frames",
        ),
        ("- just\n- a list\n", "YAML mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_manifests(tmp_path, text, message):
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_suite(tmp_path / "s.yaml", check_files=False)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_suite(tmp_path / "none.yaml")
