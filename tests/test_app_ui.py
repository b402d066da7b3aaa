"""The Gradio app without a browser: it builds, and its handlers behave (limits, errors, isolation, the grid)."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from workbench.config import SAMPLES_PER_FRAME, Settings
from workbench.media import MediaError
from workbench.ui import header
from workbench.ui.context import avatar_label
from workbench.ui.library import AccessError, safe_name, short_id
from workbench.ui.prepare_tab import validate_upload
from workbench.ui.session_state import new_session
from workbench.ui.tuning_tab import audio_at, parse_shifts

FRAMES = 6  # avatar frames: enough for a slider and a ping-pong loop, cheap to detect


@pytest.fixture(scope="module")
def app_dirs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app")


@pytest.fixture(scope="module")
def ui(app_dirs, samples_dir, tmp_path_factory):
    from workbench.engine import Engine
    from workbench.realtime.server import RealtimeManager
    from workbench.ui.app import WorkbenchUI

    settings = Settings(
        cache_dir=app_dirs / "cache",
        models_dir=app_dirs / "models",
        runs_dir=app_dirs / "runs",
        max_upload_mb=5,
        max_upload_seconds=12,
        openai_api_key=None,
    )
    engine = Engine(settings, renderer="cpu")
    ui = WorkbenchUI(engine, samples_dir=samples_dir, realtime=RealtimeManager(engine, settings))
    # The handlers here are called directly with files the tests make (Gradio would have put an upload in its
    # upload folder): the tests' temporary folder stands in for it.
    ui.ctx.input_roots.append(tmp_path_factory.getbasetemp())
    ui.demo = ui.build()
    return ui


@pytest.fixture(scope="module")
def prepared(ui):
    """Session A prepared yongen.mp4 (a sample) with FRAMES frames."""
    out = ui.prepare_tab.prepare(
        "yongen.mp4", None, 0, 10, "jaw", 90, 90, "dlib", "landmarks", FRAMES, new_session(), progress=None
    )
    return out


def _image_digest(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest()


# --- building --------------------------------------------------------------------------------
def test_build_ui_has_the_tabs_and_components(ui):
    assert isinstance(ui.demo, gr.Blocks)
    labels = {b.label for b in ui.demo.blocks.values() if isinstance(b, gr.Tab)}
    assert {"Avatar preparation", "bbox_shift tuning"} <= labels
    ids = {getattr(b, "elem_id", None) for b in ui.demo.blocks.values()}
    assert {"prep-button", "prep-overlay", "tune-gallery", "tune-run", "wb-header"} <= ids


def test_header_says_what_is_active_and_how_to_enable_the_rest(ui, app_dirs):
    from workbench import weights

    report = weights.check(app_dirs / "models")
    lines = header.status_lines("cpu", report, openai_configured=False)
    assert "CPU renderer active" in lines["renderer"] and weights.DOWNLOAD_COMMAND in lines["renderer"]
    assert "OPENAI_API_KEY" in lines["voice"] and "Local voice mode" in lines["voice"]
    assert "musetalkV15 (missing)" in lines["weights"]
    html = ui.header_html()
    assert "CPU renderer" in html and "local voice" in html


def test_header_never_contains_the_key(app_dirs, samples_dir):
    from workbench.engine import Engine
    from workbench.ui.app import WorkbenchUI

    secret = "sk-test-DO-NOT-SHOW-1234567890"
    settings = Settings(cache_dir=app_dirs / "cache", models_dir=app_dirs / "models", openai_api_key=secret)
    ui2 = WorkbenchUI(Engine(settings, renderer="cpu"), samples_dir=samples_dir)
    html = ui2.header_html()
    assert "OpenAI Realtime" in html and secret not in html
    demo = ui2.build()
    assert secret not in str(demo.get_config_file())


# --- uploads ---------------------------------------------------------------------------------
def test_upload_checks_give_clear_errors(tmp_path, samples_dir):
    wrong = tmp_path / "notes.txt"
    wrong.write_text("hello")
    with pytest.raises(MediaError, match="not a supported type"):
        validate_upload(wrong, 5, 12)
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(MediaError, match="not a readable"):
        validate_upload(corrupt, 5, 12)
    with pytest.raises(MediaError, match="the limit is 1 MB"):
        validate_upload(samples_dir / "yongen.mp4", 1, 12)  # 1.9 MB
    with pytest.raises(MediaError, match="the limit is 5 s"):
        validate_upload(samples_dir / "yongen.mp4", 5, 5)  # 10.7 s
    photo = tmp_path / "face.png"
    import cv2

    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    assert validate_upload(photo, 5, 12) == photo


def test_bad_upload_through_the_handler_is_a_gr_error(ui, tmp_path):
    bad = tmp_path / "clip.mov"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(gr.Error) as e:
        ui.prepare_tab.prepare(
            None, str(bad), 0, 10, "jaw", 90, 90, "dlib", "landmarks", FRAMES, new_session(), progress=None
        )
    assert "clip.mov" in e.value.message
    with pytest.raises(gr.Error, match="Pick a sample"):
        ui.prepare_tab.prepare(
            None, None, 0, 10, "jaw", 90, 90, "dlib", "landmarks", FRAMES, new_session(), progress=None
        )


def test_error_messages_are_escaped(ui, tmp_path):
    bad = tmp_path / "<img src=x onerror=alert(1)>.mp4"
    bad.write_bytes(b"garbage")
    with pytest.raises(gr.Error) as e:
        ui.prepare_tab.prepare(
            None, str(bad), 0, 10, "jaw", 90, 90, "dlib", "landmarks", FRAMES, new_session(), progress=None
        )
    assert "<img" not in e.value.message and "&lt;img" in e.value.message


def test_safe_name_strips_paths():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("my clip (1).mp4") == "my_clip_1_.mp4"


# --- preparation -------------------------------------------------------------------------------
def test_prepare_shows_overlays_range_and_renderer(ui, prepared):
    session, summary, overlay, crop, slider, table, dropdown = prepared
    avatar_id = session.current
    assert session.avatars == [avatar_id]
    assert "Measured bbox_shift range" in summary and "CPU renderer" in summary
    avatar = ui.library.load(avatar_id)
    lo, hi = avatar.bbox_range
    assert f"[{lo} ~ {hi}]" in summary
    assert overlay.ndim == 3 and overlay.shape[2] == 3 and crop.shape == (256, 768, 3)
    assert slider["maximum"] == FRAMES - 1
    assert any(row[0] == "yongen" for row in table)  # the readable name, not a cut-off hash
    assert dropdown["value"] == avatar_id
    # The overlay really draws: it differs from the plain frame where the box and mask are.
    plain = np.ascontiguousarray(avatar.frames[0][..., ::-1])
    from workbench.ui.overlays import fit

    assert not np.array_equal(fit(plain), overlay)


def test_frame_slider_and_layers(ui, prepared):
    session = prepared[0]
    first, _ = ui.prepare_tab.frame(0, ["box", "landmarks", "mask"], session)
    last, _ = ui.prepare_tab.frame(FRAMES - 1, ["box", "landmarks", "mask"], session)
    bare, _ = ui.prepare_tab.frame(0, [], session)
    assert first.shape == last.shape == bare.shape
    assert not np.array_equal(first, bare)  # layers drawn
    beyond, _ = ui.prepare_tab.frame(10_000, ["box"], session)  # clamped, not an error
    assert beyond.shape == first.shape


def test_sessions_do_not_see_each_others_uploads(ui, samples_dir, tmp_path):
    import cv2

    upload = tmp_path / "my face.png"  # a photo of a real person: not one of the samples
    cap = cv2.VideoCapture(str(samples_dir / "sun.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(upload), frame)
    a = ui.prepare_tab.prepare(
        None, str(upload), 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4, new_session(), progress=None
    )
    session_a = a[0]
    own_id = session_a.current
    session_b = new_session()
    visible_b = {i.avatar_id for i in ui.library.visible(session_b.avatars)}
    visible_a = {i.avatar_id for i in ui.library.visible(session_a.avatars)}
    assert own_id in visible_a and own_id not in visible_b
    with pytest.raises(AccessError):
        ui.library.check_access(own_id, session_b.avatars)
    with pytest.raises(gr.Error, match="another session"):
        ui.prepare_tab.use(own_id, session_b)
    with pytest.raises(gr.Error, match="another session"):
        ui.prepare_tab.delete(own_id, session_b)
    # The upload was kept outside Gradio's temporary folder, so the avatar can be re-prepared later.
    kept = ui.library.source_path(own_id)
    assert kept.is_file() and kept.parent.parent == ui.library.uploads_dir
    # The owner can delete it; afterwards nobody sees it.
    own_name = ui.engine.cache.info(own_id).name
    assert own_name == "my_face"  # the uploaded file's stem
    assert any(r[0] == own_name for r in ui.prepare_tab.refresh(session_a)[0])
    session_a, rows, _ = ui.prepare_tab.delete(own_id, session_a)
    assert own_id not in session_a.avatars and not ui.engine.cache.has(own_id)
    assert all(r[0] not in (short_id(own_id), own_name) for r in rows)


def test_sample_avatars_are_shared(ui, prepared):
    sample_id = prepared[0].current
    assert sample_id in {i.avatar_id for i in ui.library.visible([])}
    ui.library.check_access(sample_id, [])  # no error
    with pytest.raises(gr.Error, match="read-only"):
        ui.prepare_tab.delete(sample_id, new_session())


def test_a_session_deletes_only_what_it_created(ui, prepared, samples_dir, tmp_path):
    """Two browser sessions. Preparing a sample (a cache hit) or another visitor's upload with the same file and
    settings shows the avatar, but does not make it yours to delete; samples are read-only for everyone."""
    import cv2

    sample_id = prepared[0].current
    session_a, session_b = new_session(), new_session()
    hit = ui.prepare_tab.prepare(
        "yongen.mp4", None, 0, 10, "jaw", 90, 90, "dlib", "landmarks", FRAMES, session_b, progress=None
    )
    session_b = hit[0]
    assert session_b.current == sample_id and sample_id in session_b.avatars
    for s in (prepared[0], session_b):  # even the session that first prepared it
        with pytest.raises(gr.Error, match="read-only"):
            ui.prepare_tab.delete(sample_id, s)
    assert ui.engine.cache.has(sample_id)

    upload = tmp_path / "visitor.png"
    cap = cv2.VideoCapture(str(samples_dir / "sun.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(upload), frame)
    session_a = ui.prepare_tab.prepare(
        None, str(upload), 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4, session_a, progress=None
    )[0]
    own_id = session_a.current
    copy = tmp_path / "same file.png"
    shutil.copyfile(upload, copy)
    session_b = ui.prepare_tab.prepare(
        None, str(copy), 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4, session_b, progress=None
    )[0]
    assert session_b.current == own_id  # the same content and settings: a cache hit
    with pytest.raises(gr.Error, match="only the session that prepared"):
        ui.prepare_tab.delete(own_id, session_b)
    assert ui.engine.cache.has(own_id)
    session_a, _, _ = ui.prepare_tab.delete(own_id, session_a)
    assert not ui.engine.cache.has(own_id)


def test_avatars_have_readable_names_accepted_as_ids(ui, prepared):
    sample_id = prepared[0].current
    info = ui.engine.cache.info(sample_id)
    assert info.name == "yongen"
    assert ui.engine.load_avatar("yongen").avatar_id == sample_id
    assert ui.engine.cache.resolve("yongen") == sample_id
    assert ui.engine.cache.unique_name("yongen") == "yongen-2"  # a second avatar of the clip gets its own
    assert "yongen" in avatar_label(info)


def test_the_tuning_grid_adds_no_avatars(ui, prepared):
    session = prepared[0]
    avatar_id = session.current
    before = {i.avatar_id for i in ui.engine.list_avatars()}
    ui.tuning_tab.grid(
        avatar_id, 1, "eng.wav", None, 3.6, "-7, 3, 5", 10, "jaw", 90, 90, True, 0.4, session, progress=None
    )
    assert {i.avatar_id for i in ui.engine.list_avatars()} == before


def test_forged_avatar_ids_are_refused(ui):
    with pytest.raises(gr.Error):
        ui.prepare_tab.use("../../etc", new_session())
    with pytest.raises(gr.Error, match="choose an avatar"):
        ui.prepare_tab.use(None, new_session())


# --- tuning ------------------------------------------------------------------------------------
def test_loudest_moment_finds_speech():
    from workbench.ui.tuning_tab import loudest_moment

    audio = np.zeros(16000 * 3, np.float32)
    audio[int(1.6 * 16000) : int(1.64 * 16000)] = 0.5
    assert loudest_moment(audio) == pytest.approx(1.6)


def test_parse_shifts():
    assert parse_shifts("-6, 0 ,6") == [-6, 0, 6]
    assert parse_shifts("3 3 -2.4") == [3, -2]
    with pytest.raises(ValueError, match="not a number"):
        parse_shifts("a, 2")
    with pytest.raises(ValueError, match="at least one"):
        parse_shifts("  ")
    with pytest.raises(ValueError, match="at most"):
        parse_shifts(",".join(str(i) for i in range(20)))


def test_audio_at_pairs_frame_with_moment():
    audio = np.arange(40 * SAMPLES_PER_FRAME, dtype=np.float32)
    for f, t in [(3, 20), (20, 3), (7, 7), (0, 39)]:
        shifted = audio_at(audio, f, t)
        got = shifted[f * SAMPLES_PER_FRAME : (f + 1) * SAMPLES_PER_FRAME]
        np.testing.assert_array_equal(got, audio[t * SAMPLES_PER_FRAME : (t + 1) * SAMPLES_PER_FRAME])


def test_tuning_grid_gives_distinct_previews_and_saves(ui, prepared):
    session = prepared[0]
    avatar_id = session.current
    shifts_text, frame_update, em, pm, lc, rc, info = ui.tuning_tab.select(avatar_id, session)
    shifts = parse_shifts(shifts_text)
    avatar = ui.library.load(avatar_id)
    lo, hi = avatar.bbox_range
    assert min(shifts) == lo and max(shifts) == hi and 0 in shifts
    assert (em, pm, lc, rc) == (10, "jaw", 90, 90) and "Measured bbox_shift range" in info
    three = f"{lo}, 0, {hi}"
    gallery, clip, status, chosen = ui.tuning_tab.grid(
        avatar_id, 2, "eng.wav", None, 3.6, three, 10, "jaw", 90, 90, False, 1.0, session, progress=None
    )
    items = gallery["value"]
    assert [c for _, c in items] == [f"bbox_shift={lo}", "bbox_shift=0", f"bbox_shift={hi}"]
    assert len({_image_digest(img) for img, _ in items}) == 3
    assert clip is None and "3 previews" in status and chosen["choices"] == [lo, 0, hi]
    # The previews follow the real audio: eng.wav is silent for its first 3 s and loud at 3.6 s.
    silent, _, _, _ = ui.tuning_tab.grid(
        avatar_id, 2, "eng.wav", None, 1.0, "0", 10, "jaw", 90, 90, False, 1.0, session, progress=None
    )
    assert _image_digest(silent["value"][0][0]) != _image_digest(items[1][0])
    session2, msg, dd = ui.tuning_tab.save(avatar_id, hi, 10, "jaw", 90, 90, session, progress=None)
    new_id = session2.current
    assert new_id != avatar_id and new_id in session2.avatars and dd["value"] == new_id
    assert ui.library.load(new_id).params.bbox_shift == hi and f"bbox_shift {hi}" in msg


def test_tuning_sweep_recommends_and_saves_in_one_click(ui, prepared):
    session = prepared[0]
    avatar_id = session.current
    fig, table, msg, best = ui.tuning_tab.sweep.run(
        avatar_id, "eng.wav", None, 6.0, "-4, 4", 10, "jaw", 90, 90, session, progress=None
    )
    assert list(table["bbox_shift"]) == [-4, 4] and best in (-4, 4)
    assert f"Recommended bbox_shift: {best}" in msg and hasattr(fig, "savefig")
    assert float(table.loc[table["bbox_shift"] == best, "score"].iloc[0]) == max(table["score"].astype(float))
    session2, saved, dd = ui.tuning_tab.sweep.save(avatar_id, best, 10, "jaw", 90, 90, session, progress=None)
    assert ui.library.load(session2.current).params.bbox_shift == best and f"bbox_shift {best}" in saved
    with pytest.raises(gr.Error, match="Score a sweep first"):
        ui.tuning_tab.sweep.save(avatar_id, None, 10, "jaw", 90, 90, session, progress=None)


def test_tuning_clip_is_a_playable_side_by_side_video(ui, prepared):
    from workbench.media import probe

    session = prepared[0]
    avatar_id = session.current
    _, clip, _, _ = ui.tuning_tab.grid(
        avatar_id, 0, "eng.wav", None, 3.4, "-4, 4", 10, "jaw", 90, 90, True, 1.0, session, progress=None
    )
    info = probe(clip)
    assert info.has_video and info.has_audio
    assert info.width >= 2 * 300 - 2  # two panels side by side
    assert 0.9 <= info.duration <= 1.2


def test_tuning_errors_are_clear(ui, prepared, tmp_path):
    session = prepared[0]
    avatar_id = session.current
    with pytest.raises(gr.Error, match="not a number"):
        ui.tuning_tab.grid(
            avatar_id, 0, "eng.wav", None, 1.0, "x", 10, "jaw", 90, 90, False, 1.0, session, progress=None
        )
    bad = tmp_path / "speech.txt"
    bad.write_text("no")
    with pytest.raises(gr.Error, match="not a supported audio type"):
        ui.tuning_tab.grid(
            avatar_id, 0, None, str(bad), 1.0, "0", 10, "jaw", 90, 90, False, 1.0, session, progress=None
        )
    with pytest.raises(gr.Error, match="Render a grid"):
        ui.tuning_tab.save(avatar_id, None, 10, "jaw", 90, 90, session, progress=None)


# --- realtime chat tab -------------------------------------------------------------------------
def test_chat_tab_embeds_the_page_for_own_avatars_only(ui, prepared):
    session = prepared[0]
    avatar_id = session.current
    page = ui.chat_tab.frame(avatar_id, session)
    # The page gets a grant for this avatar, never the id itself (ids would let other sessions in).
    token = re.search(r'src="/rtc/chat\?grant=([^"]+)"', page).group(1)
    assert avatar_id not in page and ui.ctx.realtime.granted_avatar(token) == avatar_id
    assert 'allow="microphone; autoplay"' in page
    assert "<iframe" not in ui.chat_tab.frame(None, session)
    with pytest.raises(gr.Error):
        ui.chat_tab.frame("0123456789abcdef-000000000000", new_session())


def test_served_app_never_sends_the_key(app_dirs, samples_dir):
    from fastapi.testclient import TestClient

    from workbench.engine import Engine
    from workbench.ui.app import create_app

    secret = "sk-test-NEVER-IN-A-RESPONSE-42"
    settings = Settings(
        cache_dir=app_dirs / "cache",
        models_dir=app_dirs / "models",
        runs_dir=app_dirs / "runs",
        openai_api_key=secret,
        prepare_example=False,  # its background preparation would land in the shared cache during later tests
    )
    app = create_app(Engine(settings, renderer="cpu"), samples_dir=samples_dir)
    with TestClient(app) as client:
        rtc = client.get("/rtc/config")
        assert rtc.status_code == 200 and rtc.json()["server_key"] is True
        assert rtc.json()["avatars"] == []  # no session learns another's avatar ids
        chat = client.get("/rtc/chat")
        assert chat.status_code == 200 and 'type="password"' in chat.text
        pages = [rtc.text, chat.text, client.get("/").text, client.get("/config").text]
        assert all(secret not in p for p in pages)
        assert "Talking-head workbench" in client.get("/config").text


# --- evaluation tab -----------------------------------------------------------------------------
def test_select_cases_and_quick_runs(ui):
    from workbench.ui.eval_tab import select_cases

    suite = ui.eval_tab.suite_for("example", None)
    assert {"yongen_eng", "syncnet_example"} <= {c.id for c in suite.cases}
    assert not suite.missing_files()
    quick = select_cases(suite, ["yongen_eng", "syncnet_example"], 2)
    assert [c.id for c in quick.cases] == ["yongen_eng", "syncnet_example"]
    assert all(c.max_seconds == 2 for c in quick.cases)
    with pytest.raises(Exception, match="at least one case"):
        select_cases(suite, ["nope"], None)


def test_evaluation_defaults_pass_the_components_own_checks(ui):
    """Pressing *Run evaluation* untouched sends the seconds field's default (the browser sends 0 when empty)."""
    seconds = next(b for b in ui.demo.blocks.values() if getattr(b, "elem_id", None) == "eval-seconds")
    for sent in (seconds.value, 0):
        assert seconds.preprocess(sent) in (0, None)
    quick = ui.eval_tab.suite_for("example", None)
    assert select_cases_default(quick, seconds.preprocess(0))


def select_cases_default(suite, seconds):
    from workbench.ui.eval_tab import select_cases

    chosen = select_cases(suite, None, float(seconds) if seconds else None)
    return all(c.max_seconds == orig.max_seconds for c, orig in zip(chosen.cases, suite.cases, strict=True))


def test_uploaded_manifests_are_confined(ui, tmp_path, samples_dir):
    import zipfile

    from workbench.evaluation.errors import ManifestError
    from workbench.ui.eval_tab import uploaded_suite

    good = tmp_path / "mine.yaml"
    good.write_text("name: mine\ncases:\n  - id: ref\n    kind: reference\n    video: syncnet_example.avi\n")
    suite = uploaded_suite(good, tmp_path, samples_dir, 10_000_000)
    assert suite.files_of(suite.cases[0])["video"] == (samples_dir / "syncnet_example.avi").resolve()
    escape = tmp_path / "escape.yaml"
    escape.write_text("name: bad\ncases:\n  - id: ref\n    kind: reference\n    video: /etc/hostname\n")
    with pytest.raises(ManifestError, match="only name files inside"):
        uploaded_suite(escape, tmp_path, samples_dir, 10_000_000)
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../evil.yaml", "name: x")
    with pytest.raises(ManifestError, match="unsafe entry"):
        uploaded_suite(slip, tmp_path, samples_dir, 10_000_000)
    bundle = tmp_path / "bundle.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("suite/suite.yaml", "name: b\ncases:\n  - id: ref\n    kind: reference\n    video: clip.avi\n")
        zf.write(samples_dir / "syncnet_example.avi", "suite/clip.avi")
    suite = uploaded_suite(bundle, tmp_path, samples_dir, 10_000_000)
    assert suite.files_of(suite.cases[0])["video"].is_file()
    with pytest.raises(ManifestError, match="the limit is"):
        uploaded_suite(bundle, tmp_path, samples_dir, 1000)
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("name: [unclosed")
    with pytest.raises(ManifestError, match="not valid YAML"):
        uploaded_suite(notyaml, tmp_path, samples_dir, 10_000_000)


def test_evaluation_run_download_isolation_and_compare(ui, tmp_path):
    import zipfile

    import matplotlib.pyplot as plt

    session = new_session()
    avatars_before = {i.avatar_id for i in ui.engine.list_avatars()}
    out = ui.eval_tab.run("example", None, ["yongen_eng"], 2, session, progress=None)
    assert {i.avatar_id for i in ui.engine.list_avatars()} == avatars_before  # the run's avatar is not listed
    session2, summary, table, p1, p2, p3, p4, zip_path, candidate, baseline, past = out
    assert "of suite *example*" in summary and "1 ok" in summary
    assert list(table["case"]) == ["yongen_eng"] and table["status"].iloc[0] == "ok"
    assert all(hasattr(p, "savefig") for p in (p1, p2, p3, p4))
    assert "jitter_lips" in table.columns and "ls_lag0" in table.columns  # the quality scores, from the registry
    names = zipfile.ZipFile(zip_path).namelist()
    assert any(n.endswith("summary.json") for n in names) and any(n.endswith("plots/sync_curves.png") for n in names)
    label = candidate["value"]
    assert label.startswith("mine/") and label in past["choices"]
    # Another session does not see this run, and cannot open it by name.
    other = new_session()
    assert label not in ui.eval_tab.runs(other)
    with pytest.raises(gr.Error, match="choose a run"):
        ui.eval_tab.open_run(label, other)
    # A shared baseline (as `workbench eval` writes under runs_dir) is visible to every session.
    run_dir = ui.eval_tab.runs(session2)[label]
    shutil.copytree(run_dir, ui.ctx.runs_dir / "baseline-copy")
    assert "shared/baseline-copy" in ui.eval_tab.runs(other)
    head, gate, cases, sync_fig, lat_fig = ui.eval_tab.compare(label, "shared/baseline-copy", session2)
    assert "No regression" in head and len(gate) > 0 and "ls_evidence" in set(cases["metric"])
    with pytest.raises(gr.Error, match="two different runs"):
        ui.eval_tab.compare(label, label, session2)
    for fig in (p1, p2, p3, p4, sync_fig, lat_fig):
        plt.close(fig)


# --- app.py ------------------------------------------------------------------------------------
def _app_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("workbench_app_entry", Path(__file__).parents[1] / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_server_address_precedence(monkeypatch):
    entry = _app_module()
    for name in ("WORKBENCH_HOST", "WORKBENCH_PORT", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "SPACE_ID"):
        monkeypatch.delenv(name, raising=False)
    assert entry._server_address(Settings(), None, None) == ("127.0.0.1", 7860)
    monkeypatch.setenv("SPACE_ID", "someone/workbench")
    assert entry._server_address(Settings(), None, None)[0] == "0.0.0.0"
    monkeypatch.setenv("GRADIO_SERVER_NAME", "10.0.0.5")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "9000")
    assert entry._server_address(Settings(), None, None) == ("10.0.0.5", 9000)
    monkeypatch.setenv("WORKBENCH_HOST", "127.0.0.2")
    assert entry._server_address(Settings(), None, None)[0] == "127.0.0.2"
    assert entry._server_address(Settings(), "127.0.0.3", 7999) == ("127.0.0.3", 7999)


def test_cli_flags():
    from typer.testing import CliRunner

    result = CliRunner().invoke(_app_module().cli, ["--help"])
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--share", "--models-dir", "--cache-dir", "--runs-dir", "--max-sessions"):
        assert flag in result.output


def test_builds_without_sample_media(app_dirs, tmp_path, monkeypatch):
    """A deployment without the samples (a bare Space): the bundled examples are offered; without them too,
    the app still builds and says what is missing."""
    from workbench.engine import Engine
    from workbench.ui.app import WorkbenchUI

    settings = Settings(cache_dir=tmp_path / "cache", models_dir=app_dirs / "models", runs_dir=tmp_path / "runs")
    space = WorkbenchUI(Engine(settings, renderer="cpu"), samples_dir=tmp_path / "no-samples")
    space.build()
    assert {"yongen.mp4", "sun.mp4"} <= {p.name for p in space.library.sample_sources()}
    assert {"speech_en.ogg", "speech_zh.ogg"} <= {p.name for p in space.library.sample_audio()}
    # The example suite offers only the cases whose media are here: the generated ones on the bundled clips.
    ids = [c.id for c in space.eval_tab.suite_for("example", None).cases]
    assert "yongen_eng" in ids
    assert all(
        all(p.exists() for p in s.files_of(c).values())
        for s in [space.eval_tab.suite_for("example", None)]
        for c in s.cases
    )

    bare = WorkbenchUI(Engine(settings, renderer="cpu"), samples_dir=tmp_path / "no-samples")
    bare.library.examples_dir = None
    bare.library._sample_digests = None
    bare.build()
    assert bare.library.sample_sources() == [] and bare.library.visible([]) == []
    with pytest.raises(gr.Error, match="Pick a sample or upload"):
        bare.prepare_tab.prepare(None, None, 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4, new_session(), progress=None)
    # A suite whose every case names missing media says so.
    suite = tmp_path / "suites" / "example.yaml"
    suite.parent.mkdir()
    suite.write_text("name: example\ncases:\n  - id: ref\n    kind: reference\n    video: ../gone/clip.avi\n")
    monkeypatch.setattr("workbench.ui.eval_tab.EXAMPLE_SUITE", suite)
    with pytest.raises(gr.Error, match="needs the sample media"):
        bare.eval_tab.run("example", None, None, None, new_session(), progress=None)


# --- what a new user tripped on (issue 29) --------------------------------------------------------
def _deps_with(demo, output_ids: set[int]) -> list[dict]:
    return [d for d in demo.get_config_file()["dependencies"] if output_ids <= set(d["outputs"])]


def test_long_tasks_show_one_progress_bar_where_the_result_appears(ui):
    """Preparing updated six outputs and Gradio drew its progress over each; now one bar, on one output."""
    tab = ui.prepare_tab
    shown_ids = {c._id for c in tab.shown}
    prepare = _deps_with(ui.demo, shown_ids)
    assert prepare and all(len(d["show_progress_on"] or []) == 1 for d in prepare if d["show_progress"] != "hidden")
    for elem in ("tune-status", "eval-summary", "wb-weights-status"):
        ids = [c._id for c in ui.demo.blocks.values() if getattr(c, "elem_id", None) == elem]
        assert any(d["show_progress_on"] == ids for d in ui.demo.get_config_file()["dependencies"]), elem


def test_prepare_says_when_max_frames_cut_the_source(ui, prepared):
    summary = prepared[1]
    assert "Cut to max frames" in summary and f"the first {FRAMES} " in summary
    from workbench.ui.prepare_tab import cut_note

    avatar = ui.library.load(prepared[0].current)
    assert cut_note(Path("/nonexistent.mp4"), avatar) is None  # unknown length: nothing claimed


def test_the_preparation_tab_shows_the_ready_example_avatar(ui, prepared):
    avatar_id = prepared[0].current
    original = ui.ctx.preferred_avatar
    ui.ctx.preferred_avatar = lambda: avatar_id
    try:
        session, summary, overlay, *_ = ui.prepare_tab.show_ready_example(new_session())
        assert session.current == avatar_id and "Measured bbox_shift range" in summary and overlay.ndim == 3
        busy = replace(new_session(), current="something-else")
        assert ui.prepare_tab.show_ready_example(busy)[1] == gr.update()  # a page that shows one keeps it
    finally:
        ui.ctx.preferred_avatar = original
    assert ui.prepare_tab.show_ready_example(new_session())[1] == gr.update()  # none ready: the tab as it was


def test_the_example_ready_during_a_preparation_does_not_replace_its_result(ui, prepared, monkeypatch):
    """The warm-up ended while a page prepared its own avatar: Gradio ran the example's handler with the page's
    state from before, and its output (the 100-frame example) landed on top of the visitor's (a CI failure)."""
    import threading

    example_id = prepared[0].current
    monkeypatch.setattr(ui.ctx, "preferred_avatar", lambda: example_id)
    real_prepare = ui.engine.prepare
    started, go_on = threading.Event(), threading.Event()

    def slow_prepare(*args, **kwargs):
        started.set()
        assert go_on.wait(60)
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(ui.engine, "prepare", slow_prepare)
    page = new_session()  # the state both events start from: no avatar yet
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(
            out=ui.prepare_tab.prepare(
                "sun.mp4", None, 0, 10, "jaw", 90, 90, "dlib", "landmarks", FRAMES, page, progress=None
            )
        )
    )
    worker.start()
    try:
        assert started.wait(60)
        shown = ui.prepare_tab.show_ready_example(page)  # the warm-up's end, mid-preparation
        assert all(out == gr.skip() for out in shown)  # nothing written: not the summary, not a stale session
    finally:
        go_on.set()
        worker.join(120)
    session, summary = result["out"][:2]
    assert "sun.mp4" in summary and session.current != example_id
    assert len(ui.ctx.session_locks) == 0  # nothing kept once the handlers are done


def test_session_locks_exclude_within_a_session_only_and_keep_nothing():
    from workbench.ui.session_state import SessionLocks

    locks = SessionLocks()
    with locks.hold("a") as got_a:
        assert got_a
        with locks.hold("a", wait=False) as again, locks.hold("b", wait=False) as other:
            assert not again and other  # the same page waits; another page does not
        assert len(locks) == 1
    with pytest.raises(RuntimeError), locks.hold("a"):
        raise RuntimeError("a failed preparation")
    with locks.hold("a", wait=False) as after_failure:
        assert after_failure
    assert len(locks) == 0


def test_the_renderer_is_described_as_it_runs_for_that_avatar(ui, prepared):
    from testkit.realtime import make_avatar
    from workbench.lipsync.cpu.renderer import CPURenderer

    still = make_avatar()  # no mouth movement at all: the bank is off
    assert CPURenderer().describe_for(still) == (
        "cpu: landmark warping (no mouth bank: the mouth barely moves in this video)"
    )
    assert CPURenderer(use_bank=False).describe_for(still) == "cpu: landmark warping (mouth bank off)"
    avatar = ui.library.load(prepared[0].current)
    said = ui.engine.renderer.describe_for(avatar).removeprefix("cpu: ")
    assert said in prepared[1]


def test_weights_fetch_offline_says_one_line_per_file_and_what_to_do(ui, monkeypatch):
    from workbench import weights

    models = ui.engine.models_dir
    failures = [
        (str(models / name), f"ConnectError: [Errno -3] Temporary failure in name resolution {name}", "hf download x")
        for name in ("musetalkV15/unet.pth", "musetalkV15/musetalk.json", "sd-vae/config.json")
    ]

    def offline(*args, **kwargs):
        raise weights.WeightsDownloadError(failures)

    monkeypatch.setattr(weights, "download", offline)
    warned = []
    monkeypatch.setattr(gr, "Warning", lambda msg, **kw: warned.append(msg))
    rows, banner, status = ui.weights_panel.fetch(progress=None)
    lines = status.splitlines()
    assert [ln for ln in lines if ln.startswith("- ")] == [
        "- `musetalkV15/unet.pth`: no connection",
        "- `musetalkV15/musetalk.json`: no connection",
        "- `sd-vae/config.json`: no connection",
    ]
    assert "cannot reach Hugging Face" in lines[-1] and "ConnectError" not in status and len(lines) == 6
    assert len(warned) == 1 and "ConnectError" not in warned[0]  # one short toast, not every exception
    assert rows and "CPU" in banner


def test_evaluation_tab_before_a_run_and_for_a_visitor():
    from workbench.evaluation.syncnet import syncnet_weights_path
    from workbench.ui.eval_tab import EMPTY_TABLE_HEADERS, METRIC_HELP, for_visitor

    assert EMPTY_TABLE_HEADERS[0] == "case" and EMPTY_TABLE_HEADERS[-1] == "renderer"  # metrics before it
    explained = " ".join(METRIC_HELP)
    assert "latency_late" in explained and "latency_sustained_fps" in explained
    try:
        syncnet_weights_path("/nowhere")
    except Exception as e:  # noqa: BLE001 - the message is what is checked
        said = for_visitor(str(e))
    assert "workbench weights download" not in said and "This server does not have them" in said
    assert "LSE-C/LSE-D are skipped" in said


def test_evaluation_table_has_named_headers_before_any_run(ui):
    table = next(c for c in ui.demo.blocks.values() if getattr(c, "elem_id", None) == "eval-table")
    headers = table.get_config()["value"]["headers"]
    assert headers[:3] == ["case", "kind", "status"] and "1" not in headers


def test_tuning_tiles_show_the_whole_face_and_mark_what_differs(ui, prepared):
    """Thumbnails cut the chin and looked alike: a tile holds every landmark (chin included) and, below, the mouth
    region large, with the pixels that changed from the first value outlined."""
    from workbench.ui import tuning_tiles

    avatar = ui.library.load(prepared[0].current)
    i = len(avatar) // 2
    x1, y1, x2, y2 = tuning_tiles.face_box(avatar, i)
    pts = avatar.landmarks[i]
    assert x1 <= pts[:, 0].min() and pts[:, 0].max() <= x2 and y1 <= pts[:, 1].min() and pts[8, 1] <= y2  # chin in
    mx1, my1, mx2, my2 = tuning_tiles.mouth_box(avatar, i)
    assert mx1 <= pts[48:68, 0].min() and pts[48:68, 0].max() <= mx2 and my1 <= pts[48:68, 1].min()
    frame = np.asarray(avatar.frames[i]).copy()
    other = frame.copy()
    other[int(pts[57, 1]) - 6 : int(pts[57, 1]) + 6, int(pts[48, 0]) : int(pts[54, 0])] = (0, 0, 0)  # a changed lip
    same, changed = tuning_tiles.tiles(avatar, i, [frame, frame, other])[1:]
    assert same.shape == (tuning_tiles.TILE_H, tuning_tiles.TILE_W, 3)
    magenta = lambda t: int(np.all(t == tuning_tiles.DIFF_COLOUR, axis=2).sum())  # noqa: E731
    assert magenta(same) == 0 and magenta(changed) > 20
