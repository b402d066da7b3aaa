"""Suite manifests: the shipped example, path resolution, and clear errors for bad manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.evaluation.errors import ManifestError
from workbench.evaluation.manifest import GeneratedCase, LatencyLogCase, ReferenceCase, load_suite, parse_suite

EXAMPLE = Path(__file__).parents[1] / "eval" / "suites" / "example.yaml"
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
    assert (
        isinstance(g, GeneratedCase)
        and g.bbox_shift == -3
        and g.extra_margin == 10
        and "latency" in g.metrics
        and "quality" in g.metrics
    )
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


def test_case_list_csv(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a.mp4", "b.mp4", "b.wav"):
        (clips / name).write_bytes(b"x")
    (clips / "list.csv").write_text("id,video,audio,start,seconds\na,a.mp4,,,\nb,b.mp4,b.wav,1.5,4\n\n")
    (tmp_path / "suite.yaml").write_text(
        "name: big\ncases:\n  - id: own\n    kind: reference\n    video: clips/a.mp4\n"
        "case_lists:\n  - csv: clips/list.csv\n    kind: reference\n    defaults: {max_offset: 10}\n"
        "  - csv: clips/list.csv\n    kind: generated\n    defaults: {renderer: cpu, max_frames: 20, id: ignored}\n"
    )
    with pytest.raises(ManifestError, match="duplicate case ids: a, b"):  # the two lists name the same ids
        load_suite(tmp_path / "suite.yaml")
    (clips / "gen.csv").write_text("id,video,audio,start,seconds\ng1,a.mp4,,,\ng2,b.mp4,b.wav,1.5,4\n")
    text = (
        (tmp_path / "suite.yaml")
        .read_text()
        .replace("csv: clips/list.csv\n    kind: generated", "csv: clips/gen.csv\n    kind: generated")
    )
    (tmp_path / "suite.yaml").write_text(text)
    suite = load_suite(tmp_path / "suite.yaml")
    c = {case.id: case for case in suite.cases}
    assert list(c) == ["own", "a", "b", "g1", "g2"]
    assert c["a"].kind == "reference" and c["a"].audio is None and c["a"].start == 0 and c["a"].max_offset == 10
    assert c["b"].audio == (clips / "b.wav").resolve() and c["b"].start == 1.5 and c["b"].max_seconds == 4
    # a generated row without audio is driven by the video's own track (reconstruction)
    assert c["g1"].kind == "generated" and c["g1"].source == c["g1"].audio == (clips / "a.mp4").resolve()
    assert c["g2"].audio_start == 1.5 and c["g2"].max_seconds == 4 and c["g2"].renderer == "cpu"
    assert c["g2"].max_frames == 20  # defaults apply to every row; the row's own id wins over a default's


@pytest.mark.parametrize(
    "csv_text, message",
    [
        ("id,clip\na,a.mp4\n", "missing video"),
        ("id,video,speaker\na,a.mp4,x\n", "unknown speaker"),
        ("id,video\n,a.mp4\n", "list.csv:2: id and video are required"),
        ("id,video\n", "no rows"),
        ("id,video,start\na,a.mp4,soon\n", "invalid suite manifest"),
    ],
)
def test_bad_case_lists(tmp_path, csv_text, message):
    (tmp_path / "list.csv").write_text(csv_text)
    (tmp_path / "suite.yaml").write_text("name: s\ncase_lists:\n  - csv: list.csv\n")
    with pytest.raises(ManifestError, match=message):
        load_suite(tmp_path / "suite.yaml", check_files=False)


def test_case_list_not_found(tmp_path):
    (tmp_path / "suite.yaml").write_text("name: s\ncase_lists:\n  - csv: nowhere.csv\n")
    with pytest.raises(ManifestError, match="case list not found"):
        load_suite(tmp_path / "suite.yaml")
    (tmp_path / "suite.yaml").write_text("name: s\ncase_lists:\n  - file: nowhere.csv\n")
    with pytest.raises(ManifestError, match="invalid case_lists entry"):
        load_suite(tmp_path / "suite.yaml")


def test_uploaded_manifest_cannot_read_other_csv_files(tmp_path, samples_dir):
    from workbench.ui.eval_tab import uploaded_suite

    outside = tmp_path / "private.csv"
    outside.write_text("secret,header\n1,2\n")
    manifest = tmp_path / "up.yaml"
    manifest.write_text(f"name: up\ncase_lists:\n  - csv: {outside}\n")
    with pytest.raises(ManifestError, match="outside the uploaded suite") as err:
        uploaded_suite(manifest, tmp_path, samples_dir, 10_000_000)
    assert "secret" not in str(err.value)
