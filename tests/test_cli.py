"""The `workbench` command line, end to end on a real sample: prepare → render → list → delete."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


def _text(res) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(res.output.split())


@pytest.fixture
def dirs(tmp_path):
    return ["--cache-dir", str(tmp_path / "cache"), "--models-dir", str(tmp_path / "models")]


def _avatar_id(output: str) -> str:
    line = next(ln for ln in output.splitlines() if ln.startswith("avatar "))
    return line.split()[1].rstrip(":")


def test_prepare_render_list_delete(samples_dir, ffmpeg, dirs, tmp_path):
    res = runner.invoke(app, ["prepare", str(samples_dir / "yongen.mp4"), "--max-frames", "8", *dirs])
    assert res.exit_code == 0, res.output
    assert "recommended bbox_shift range: [-" in _text(res)
    avatar_id = _avatar_id(res.output)

    # A second prepare with the same parameters reuses the cache: same id.
    again = runner.invoke(app, ["prepare", str(samples_dir / "yongen.mp4"), "--max-frames", "8", *dirs])
    assert again.exit_code == 0 and _avatar_id(again.output) == avatar_id

    audio = tmp_path / "speech.wav"
    speech, sr = sf.read(samples_dir / "yongen.wav", frames=48_000)  # 1 s of 48 kHz stereo
    sf.write(audio, speech, sr)
    out = tmp_path / "out.mp4"
    res = runner.invoke(
        app, ["render", "--avatar", avatar_id, "--audio", str(audio), "-o", str(out), "--renderer", "cpu", *dirs]
    )
    assert res.exit_code == 0, res.output
    assert "25 frames" in _text(res)
    probe = json.loads(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "stream=codec_type,r_frame_rate,nb_frames",
                "-of",
                "json",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    kinds = {s["codec_type"]: s for s in probe["streams"]}
    assert set(kinds) == {"video", "audio"}
    assert kinds["video"]["r_frame_rate"] == "25/1"

    listed = runner.invoke(app, ["avatars", "list", "--cache-dir", dirs[1]])
    assert listed.exit_code == 0 and avatar_id[:8] in listed.output
    deleted = runner.invoke(app, ["avatars", "delete", avatar_id, "--cache-dir", dirs[1]])
    assert deleted.exit_code == 0
    assert runner.invoke(app, ["avatars", "delete", avatar_id, "--cache-dir", dirs[1]]).exit_code == 2


def test_render_needs_exactly_one_avatar_source(dirs, tmp_path):
    audio = tmp_path / "a.wav"
    sf.write(audio, np.zeros(1600, np.float32), 16_000)
    res = runner.invoke(app, ["render", "--audio", str(audio), "-o", str(tmp_path / "o.mp4"), *dirs])
    assert res.exit_code == 2
    assert "exactly one of --avatar" in _text(res)


def test_no_face_is_a_clear_error(ffmpeg, dirs, tmp_path):
    gray = tmp_path / "gray.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=gray:s=160x120:d=0.4:r=25", str(gray)], check=True
    )
    res = runner.invoke(app, ["prepare", str(gray), *dirs])
    assert res.exit_code == 2
    assert "face" in res.output.lower()
    assert not list((tmp_path / "cache" / "avatars").glob("*/meta.json"))  # no avatar, not even half of one


def test_weights_check_without_weights_says_how_to_get_them(dirs):
    res = runner.invoke(app, ["weights", "check", dirs[2], dirs[3]])
    assert res.exit_code == 1
    assert "missing" in res.output
    assert "workbench weights download" in _text(res)


def test_bad_choice_is_rejected(dirs, tmp_path):
    res = runner.invoke(app, ["prepare", str(tmp_path / "x.mp4"), "--parsing-mode", "chin", *dirs])
    assert res.exit_code != 0
    assert "chin" in _text(res)


def test_render_rough_edges_are_clear(samples_dir, ffmpeg, dirs, tmp_path):
    """-o a folder writes inside it; an unwritable -o and --batch-size 0 fail at once without a traceback;
    silent audio is reported; the avatar's readable name works as its id."""
    res = runner.invoke(app, ["prepare", str(samples_dir / "yongen.mp4"), "--max-frames", "4", *dirs])
    assert res.exit_code == 0, res.output
    assert "(name yongen)" in _text(res)
    speech = tmp_path / "speech.wav"
    sf.write(speech, sf.read(samples_dir / "eng.wav", frames=16_000 * 4)[0][-16_000:], 16_000)
    silent = tmp_path / "quiet.wav"
    sf.write(silent, np.zeros(8000, np.float32), 16_000)
    common = ["--renderer", "cpu", *dirs]

    folder = tmp_path / "renders"
    folder.mkdir()
    res = runner.invoke(app, ["render", "--avatar", "yongen", "--audio", str(speech), "-o", str(folder), *common])
    assert res.exit_code == 0, res.output
    assert (folder / "yongen_speech.mp4").stat().st_size > 0

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = runner.invoke(
            app, ["render", "--avatar", "yongen", "--audio", str(speech), "-o", str(locked / "x.mp4"), *common]
        )
    finally:
        locked.chmod(0o700)
    if os.geteuid() != 0:  # root writes anywhere
        assert res.exit_code == 2 and "permission denied" in _text(res)
    res = runner.invoke(
        app, ["render", "--avatar", "yongen", "--audio", str(speech), "-o", str(tmp_path / "nope" / "x.mp4"), *common]
    )
    assert res.exit_code == 2 and "does not exist" in _text(res)
    res = runner.invoke(
        app,
        [
            "render",
            "--avatar",
            "yongen",
            "--audio",
            str(speech),
            "-o",
            str(tmp_path / "b.mp4"),
            "--batch-size",
            "0",
            *common,
        ],
    )
    assert res.exit_code == 2 and "Traceback" not in res.output and "batch-size" in res.output
    res = runner.invoke(
        app, ["render", "--avatar", "yongen", "--audio", str(silent), "-o", str(tmp_path / "s.mp4"), *common]
    )
    assert res.exit_code == 0 and "quiet.wav is silent" in _text(res)


def _saved_avatars(cache_dir, ids):
    from testkit.realtime import make_avatar
    from workbench.avatars.store import AvatarCache

    cache = AvatarCache(cache_dir)
    for avatar_id in ids:
        cache.save(make_avatar(n=2, avatar_id=avatar_id))
    return cache


def test_every_id_form_the_app_shows_is_accepted(dirs):
    """The app shows `1effa9-c0ae0c` (the start of each half of the id); the CLI takes it like the full id."""
    from workbench.ui.library import short_id

    full, other = "1effa9aa0011-c0ae0cbb22", "1effa9aa0011-77aa00cc11"
    cache = _saved_avatars(dirs[1], [full, other])
    assert short_id(full) == "1effa9-c0ae0c"
    assert cache.resolve("1effa9-c0ae0c") == full and cache.info("1effa9-c0ae0c").avatar_id == full
    assert cache.resolve("1effa9aa0011-c0a") == full  # a prefix of the full id
    with pytest.raises(KeyError):
        cache.info("1effa9")  # both avatars start so: ambiguous, refused
    res = runner.invoke(app, ["avatars", "delete", "1effa9-c0ae0c", "--cache-dir", dirs[1]])
    assert res.exit_code == 0, res.output
    assert [i.avatar_id for i in cache.list()] == [other]


def test_listings_keep_whole_cells_in_a_pipe_and_offer_csv_and_json(dirs):
    long_id = "abcdef0123456789abcdef-0123456789abcdef0123"
    _saved_avatars(dirs[1], [long_id])
    res = runner.invoke(app, ["avatars", "list", "--cache-dir", dirs[1]])  # CliRunner's output is not a terminal
    assert res.exit_code == 0 and long_id in res.output, res.output  # not cut to 80 columns (`abcde…`)
    as_json = runner.invoke(app, ["avatars", "list", "--format", "json", "--cache-dir", dirs[1]])
    rows = json.loads(as_json.output)
    assert rows[0]["id"] == long_id and rows[0]["frames"] == 2
    as_csv = runner.invoke(app, ["avatars", "list", "--format", "csv", "--cache-dir", dirs[1]])
    header, row = as_csv.output.strip().splitlines()
    assert header.startswith("name,id,source,frames") and long_id in row
    weights = runner.invoke(app, ["weights", "check", "--format", "csv", dirs[2], dirs[3]])
    assert weights.exit_code == 1 and weights.output.startswith("component,status,files,purpose")
    assert runner.invoke(app, ["avatars", "list", "--format", "xml", "--cache-dir", dirs[1]]).exit_code == 2


def test_help_is_not_cut_to_80_columns_in_a_pipe():
    import sys

    env = {**os.environ, "COLUMNS": "", "TERMINAL_WIDTH": ""}
    env.pop("COLUMNS")
    env.pop("TERMINAL_WIDTH")
    res = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "render", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert max(len(line) for line in res.stdout.splitlines()) > 80
