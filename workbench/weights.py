"""MuseTalk's `models/` folder: what belongs in it, whether it is there and intact, and how to fetch it.

The layout is the one the MuseTalk release's `download_weights.sh` makes, plus the evaluation SyncNet:

    models/musetalkV15/{musetalk.json, unet.pth}            TMElyralab/MuseTalk (v1.5, the default)
    models/musetalk/{musetalk.json, pytorch_model.bin}      TMElyralab/MuseTalk (v1.0)
    models/sd-vae/{config.json, diffusion_pytorch_model.safetensors | .bin}   stabilityai/sd-vae-ft-mse
    models/whisper/{config.json, model.safetensors | pytorch_model.bin, preprocessor_config.json}  openai/whisper-tiny
    models/taesd/{config.json, diffusion_pytorch_model.safetensors}   madebyollin/taesd (optional fast decoder)
    models/dwpose/dw-ll_ucoco_384.pth                       yzd-v/DWPose
    models/face-parse-bisent/{79999_iter.pth, resnet18-5c106cde.pth}   Google Drive; download.pytorch.org
    models/syncnet/latentsync_syncnet.pt                    ByteDance/LatentSync (a training loss net)
    models/syncnet_eval/{syncnet_v2.model, sfd_face.pth}    Oxford VGG (syncnet_python's download_model.sh)

Where the release fetches a pickled `.bin` and the same repository also publishes `.safetensors`, the
safetensors file is downloaded (it loads without unpickling) and either one counts as present.

Integrity. None of the upstream projects publishes checksums beside its download commands, so:
- Hugging Face files are checked against what the Hub itself reports for them at download time: the
  size, and the sha256 (LFS files) or git blob sha1 (small files) carried in the ETag.
- `resnet18-5c106cde.pth` follows torchvision's naming rule: the 8 hex digits are the start of its sha256.
- The other URL files (face parsing, Oxford SyncNet, S3FD) have no published hash: they are checked for
  a loadable format (a torch zip archive whose directory reads, or a legacy torch pickle that loads).
Every verified download is recorded in `models/.weights-manifest.json` (size, sha256, source); `check`
compares files against that record, so a later truncation or replacement shows up as "corrupt".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import huggingface_hub as hub

from workbench.atomic import write_json

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
Status = Literal["present", "missing", "corrupt"]
FileFormat = Literal["json", "torch", "safetensors"]

MANIFEST_NAME = ".weights-manifest.json"
DOWNLOAD_COMMAND = "workbench weights download"
GDRIVE_BISENET_ID = "154JgKpzCPW82qINcVieuPH3fZ2e0P812"

# torch.save's legacy (pre-1.6) format begins with this pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_LEGACY_LOAD_LIMIT = 512 * 1024 * 1024  # legacy pickles are only checkable by loading; skip beyond this size


class WeightsError(RuntimeError):
    """A weights file is unusable (wrong keys, wrong format)."""


class MissingWeightsError(WeightsError):
    """Weights a feature needs are absent or damaged; the message says which and how to fetch them."""

    def __init__(self, missing: Sequence[Path | str], components: Sequence[str] = (), models_dir: Path | None = None):
        self.missing = [str(p) for p in missing]
        self.components = list(components)
        self.models_dir = models_dir
        where = f" under {models_dir}" if models_dir is not None else ""
        names = " ".join(self.components)
        command = f"{DOWNLOAD_COMMAND} {names}".rstrip()
        lines = "\n".join(f"  - {p}" for p in self.missing)
        super().__init__(
            f"MuseTalk weights are missing or damaged{where}:\n{lines}\n"
            f"Fetch them with `{command}` (or see `workbench weights check` for where each file comes from)."
        )


class PackagedModelMissingError(WeightsError):
    """A model that ships inside a PyPI package (dlib's, say) is absent: `workbench weights download` does
    not fetch those, so the message says which package to install instead."""


class WeightsDownloadError(WeightsError):
    """One or more downloads failed; the message names each file, the reason and how to fetch it by hand."""

    def __init__(self, failures: Sequence[tuple[str, str, str]]):
        self.failures = list(failures)  # (local path, reason, manual instructions)
        parts = [f"  - {path}: {reason}\n      by hand: {manual}" for path, reason, manual in self.failures]
        super().__init__("Could not download some weights:\n" + "\n".join(parts))


# --- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One file of a component. `path` is relative to models_dir; `alternatives` are other accepted names."""

    path: str
    fmt: FileFormat
    repo_id: str | None = None  # Hugging Face source
    repo_filename: str | None = None  # path inside the repo
    url: str | None = None  # non-Hub source
    alternatives: tuple[str, ...] = ()
    size: int | None = None  # published size in bytes, where one exists
    sha256: str | None = None  # published full sha256
    sha256_prefix: str | None = None  # published leading hex digits of the sha256 (torchvision naming)
    page: str | None = None  # a human page to fetch it from when the URL needs a browser

    @property
    def source(self) -> str:
        if self.repo_id:
            return f"hf://{self.repo_id}/{self.repo_filename}"
        return str(self.url)

    def manual(self, models_dir: Path) -> str:
        dest = Path(models_dir) / self.path
        if self.repo_id:
            local_dir = dest.parent
            for _ in Path(self.repo_filename or "").parent.parts:
                local_dir = local_dir.parent
            return f"hf download {self.repo_id} {self.repo_filename} --local-dir {local_dir}"
        if self.page:
            return f"open {self.page} in a browser and save the file as {dest}"
        return f"curl -L --fail -o {dest} {self.url}"


@dataclass(frozen=True)
class Component:
    name: str
    description: str
    files: tuple[FileSpec, ...]


def _hf(path: str, repo_id: str, repo_filename: str, fmt: FileFormat, alternatives: tuple[str, ...] = ()) -> FileSpec:
    return FileSpec(path=path, fmt=fmt, repo_id=repo_id, repo_filename=repo_filename, alternatives=alternatives)


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            "musetalkV15",
            "MuseTalk v1.5 UNet (config + plain state dict)",
            (
                _hf("musetalkV15/musetalk.json", "TMElyralab/MuseTalk", "musetalkV15/musetalk.json", "json"),
                _hf("musetalkV15/unet.pth", "TMElyralab/MuseTalk", "musetalkV15/unet.pth", "torch"),
            ),
        ),
        Component(
            "musetalk",
            "MuseTalk v1.0 UNet (config + plain state dict)",
            (
                _hf("musetalk/musetalk.json", "TMElyralab/MuseTalk", "musetalk/musetalk.json", "json"),
                _hf("musetalk/pytorch_model.bin", "TMElyralab/MuseTalk", "musetalk/pytorch_model.bin", "torch"),
            ),
        ),
        Component(
            "sd-vae",
            "Stable Diffusion VAE ft-MSE (256x256 crops <-> 4x32x32 latents)",
            (
                _hf("sd-vae/config.json", "stabilityai/sd-vae-ft-mse", "config.json", "json"),
                _hf(
                    "sd-vae/diffusion_pytorch_model.safetensors",
                    "stabilityai/sd-vae-ft-mse",
                    "diffusion_pytorch_model.safetensors",
                    "safetensors",
                    alternatives=("sd-vae/diffusion_pytorch_model.bin",),
                ),
            ),
        ),
        Component(
            "whisper",
            "Whisper-tiny (audio encoder) and its feature extractor",
            (
                _hf("whisper/config.json", "openai/whisper-tiny", "config.json", "json"),
                _hf(
                    "whisper/model.safetensors",
                    "openai/whisper-tiny",
                    "model.safetensors",
                    "safetensors",
                    alternatives=("whisper/pytorch_model.bin",),
                ),
                _hf("whisper/preprocessor_config.json", "openai/whisper-tiny", "preprocessor_config.json", "json"),
            ),
        ),
        Component(
            "taesd",
            "TAESD tiny autoencoder (optional fast decoder of the same latents: --decoder taesd)",
            (
                _hf("taesd/config.json", "madebyollin/taesd", "config.json", "json"),
                _hf(
                    "taesd/diffusion_pytorch_model.safetensors",
                    "madebyollin/taesd",
                    "diffusion_pytorch_model.safetensors",
                    "safetensors",
                ),
            ),
        ),
        Component(
            "dwpose",
            "DWPose whole-body landmarks (face boxes for preparation)",
            (_hf("dwpose/dw-ll_ucoco_384.pth", "yzd-v/DWPose", "dw-ll_ucoco_384.pth", "torch"),),
        ),
        Component(
            "face-parse-bisent",
            "BiSeNet face parsing (blending masks) and its ResNet-18 backbone",
            (
                FileSpec(
                    path="face-parse-bisent/79999_iter.pth",
                    fmt="torch",
                    url=f"https://drive.usercontent.google.com/download?id={GDRIVE_BISENET_ID}&export=download&confirm=t",
                    page=f"https://drive.google.com/file/d/{GDRIVE_BISENET_ID}/view",
                ),
                FileSpec(
                    path="face-parse-bisent/resnet18-5c106cde.pth",
                    fmt="torch",
                    url="https://download.pytorch.org/models/resnet18-5c106cde.pth",
                    sha256_prefix="5c106cde",
                ),
            ),
        ),
        Component(
            "syncnet",
            "LatentSync SyncNet (MuseTalk's training sync loss; not used for evaluation)",
            (_hf("syncnet/latentsync_syncnet.pt", "ByteDance/LatentSync", "latentsync_syncnet.pt", "torch"),),
        ),
        Component(
            "syncnet_eval",
            "Oxford SyncNet v2 and its S3FD face detector (LSE-C / LSE-D evaluation)",
            (
                FileSpec(
                    path="syncnet_eval/syncnet_v2.model",
                    fmt="torch",
                    url="https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
                ),
                FileSpec(
                    path="syncnet_eval/sfd_face.pth",
                    fmt="torch",
                    url="https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/sfd_face.pth",
                ),
            ),
        ),
    )
}

MUSETALK_COMPONENTS: dict[str, tuple[str, ...]] = {
    "v15": ("musetalkV15", "sd-vae", "whisper"),
    "v1": ("musetalk", "sd-vae", "whisper"),
}
DEFAULT_DOWNLOAD = MUSETALK_COMPONENTS["v15"]


def musetalk_components(version: str = "v15") -> tuple[str, ...]:
    try:
        return MUSETALK_COMPONENTS[version]
    except KeyError:
        raise ValueError(
            f"unknown MuseTalk version {version!r}; expected one of {sorted(MUSETALK_COMPONENTS)}"
        ) from None


def _components(names: Iterable[str] | None) -> list[Component]:
    if names is None:
        return list(COMPONENTS.values())
    out = []
    for n in names:
        if n not in COMPONENTS:
            raise ValueError(f"unknown weights component {n!r}; known: {', '.join(COMPONENTS)}")
        out.append(COMPONENTS[n])
    return out


# --- the report ---------------------------------------------------------------------------------


@dataclass
class FileStatus:
    path: str  # relative to models_dir, the name actually found (or the primary name when missing)
    status: Status
    detail: str = ""
    size: int | None = None
    source: str = ""


@dataclass
class ComponentStatus:
    name: str
    description: str
    status: Status
    files: list[FileStatus] = field(default_factory=list)


@dataclass
class WeightsReport:
    models_dir: Path
    components: dict[str, ComponentStatus]

    def status(self, name: str) -> Status:
        return self.components[name].status

    def ok(self, names: Iterable[str]) -> bool:
        return all(self.components[n].status == "present" for n in names)

    def problems(self, names: Iterable[str] | None = None) -> list[FileStatus]:
        """Files that are missing or corrupt, in the named components (all checked ones by default)."""
        names = list(self.components) if names is None else list(names)
        return [f for n in names for f in self.components[n].files if f.status != "present"]

    def has_musetalk(self, version: str = "v15") -> bool:
        return self.ok(musetalk_components(version))

    def require(self, names: Iterable[str]) -> None:
        names = list(names)
        bad = self.problems(names)
        if bad:
            listed = [f"{self.models_dir / f.path} ({f.status}{': ' + f.detail if f.detail else ''})" for f in bad]
            broken = [n for n in names if self.components[n].status != "present"]
            raise MissingWeightsError(listed, broken, self.models_dir)

    def to_dict(self) -> dict:
        return {"models_dir": str(self.models_dir), "components": {k: asdict(v) for k, v in self.components.items()}}


# --- integrity ----------------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_sha_cache: dict[tuple[str, int, int], str] = {}


def sha256_cached(path: Path) -> str:
    """sha256 remembered per file version (path, size, mtime), so repeated checks hash once."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        _sha_cache[key] = sha256_file(path)
    return _sha_cache[key]


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file: what the Hub reports as ETag for small (non-LFS) files."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_probe_cache: dict[tuple[str, str, int, int], str | None] = {}


def probe_format(path: Path, fmt: FileFormat) -> str | None:
    """None when `path` reads as `fmt`, else why not. Cheap for big files: reads headers and indexes only
    (legacy torch pickles have no index and are loaded; results are remembered per file version)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        return f"unreadable ({type(e).__name__}: {e})"
    key = (str(path.resolve()), fmt, st.st_size, st.st_mtime_ns)
    if key not in _probe_cache:
        _probe_cache[key] = _probe(path, fmt, st.st_size)
    return _probe_cache[key]


def _probe(path: Path, fmt: FileFormat, size: int) -> str | None:
    try:
        if size == 0:
            return "empty file"
        if fmt == "json":
            obj = json.loads(path.read_text(encoding="utf-8"))
            return None if isinstance(obj, dict) else "JSON is not an object"
        if fmt == "safetensors":
            return _probe_safetensors(path, size)
        return _probe_torch(path, size)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"unreadable ({type(e).__name__}: {e})"


def _probe_safetensors(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "truncated safetensors header"
        n = int.from_bytes(head, "little")
        if n <= 0 or n > min(size - 8, 100 * 1024 * 1024):
            return "not a safetensors file (bad header length)"
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"safetensors size mismatch: header says {8 + n + end} bytes, file has {size}"
    return None


def _probe_torch(path: Path, size: int) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile as e:
            return f"damaged torch archive ({e})"
        return None if any(n.endswith("data.pkl") for n in names) else "zip archive without data.pkl (not torch.save)"
    if head.startswith(_LEGACY_TORCH_MAGIC):
        if size > _LEGACY_LOAD_LIMIT:
            return None
        import torch

        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a truncated legacy pickle raises from deep inside the unpickler
            return f"legacy torch file does not load ({type(e).__name__}: {e})"
        return None
    if head.lstrip().startswith((b"<!DOCTYPE", b"<html", b"<HTML")):
        return "an HTML page, not a model (the download was redirected to a web page)"
    return "not a torch checkpoint"


def _read_manifest(models_dir: Path) -> dict:
    p = Path(models_dir) / MANIFEST_NAME
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _record(models_dir: Path, rel: str, entry: dict) -> None:
    data = _read_manifest(models_dir)
    data[rel] = entry
    write_json(Path(models_dir) / MANIFEST_NAME, data)


def _verify(path: Path, spec: FileSpec, expected: dict | None, deep: bool) -> tuple[Status, str]:
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        return "corrupt", f"size {size} bytes, the published size is {spec.size}"
    rec_size = (expected or {}).get("size")
    if rec_size is not None and size != rec_size:
        return "corrupt", f"size {size} bytes, but {rec_size} were verified at download (truncated or replaced)"
    why = probe_format(path, spec.fmt)
    if why:
        return "corrupt", why
    exp_sha = spec.sha256 or (expected or {}).get("sha256")
    if spec.sha256_prefix or (deep and exp_sha):
        # the prefix check is cheap enough to run every time once cached; a deep check always re-reads
        digest = sha256_file(path) if deep else sha256_cached(path)
        if spec.sha256_prefix and not digest.startswith(spec.sha256_prefix):
            return "corrupt", f"sha256 {digest[:12]}… does not start with the published {spec.sha256_prefix}"
        if deep and exp_sha and digest != exp_sha:
            return "corrupt", f"sha256 {digest[:12]}… differs from the recorded {exp_sha[:12]}…"
    return "present", ""


def _check_file(models_dir: Path, spec: FileSpec, manifest: dict, deep: bool) -> FileStatus:
    found: FileStatus | None = None
    for rel in (spec.path, *spec.alternatives):
        p = models_dir / rel
        if not p.is_file():
            continue
        status, detail = _verify(p, spec if rel == spec.path else _alt_spec(spec, rel), manifest.get(rel), deep)
        st = FileStatus(rel, status, detail, p.stat().st_size, spec.source)
        if status == "present":
            return st
        found = found or st
    return found or FileStatus(spec.path, "missing", "", None, spec.source)


def _alt_spec(spec: FileSpec, rel: str) -> FileSpec:
    fmt: FileFormat = "safetensors" if rel.endswith(".safetensors") else "json" if rel.endswith(".json") else "torch"
    return FileSpec(path=rel, fmt=fmt, repo_id=spec.repo_id, repo_filename=Path(rel).name)


def check(models_dir: Path | str, components: Iterable[str] | None = None, deep: bool = False) -> WeightsReport:
    """Status of each component's files. `deep` also re-hashes files against the download record."""
    models_dir = Path(models_dir)
    manifest = _read_manifest(models_dir)
    out: dict[str, ComponentStatus] = {}
    for comp in _components(components):
        files = [_check_file(models_dir, spec, manifest, deep) for spec in comp.files]
        statuses = {f.status for f in files}
        status: Status = "corrupt" if "corrupt" in statuses else "missing" if "missing" in statuses else "present"
        out[comp.name] = ComponentStatus(comp.name, comp.description, status, files)
    return WeightsReport(models_dir, out)


def has_musetalk(models_dir: Path | str, version: str = "v15") -> bool:
    """True when the UNet, VAE and Whisper files MuseTalk `version` needs are present and intact."""
    names = musetalk_components(version)
    return check(models_dir, names).ok(names)


def require_musetalk(models_dir: Path | str, version: str = "v15") -> WeightsReport:
    """The report, or MissingWeightsError naming what is absent and the download command."""
    names = musetalk_components(version)
    report = check(models_dir, names)
    report.require(names)
    return report


# --- downloading --------------------------------------------------------------------------------


def _tqdm_forwarding(progress: Progress, label: str, base: float, span: float):
    """A tqdm class for hf_hub_download that forwards byte counts to `progress`."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # the callback is the display
            super().__init__(*args, **kwargs)
            self._done = kwargs.get("initial") or 0  # a resumed download starts part-way

        def update(self, n=1):
            self._done += n or 0
            total = self.total or 0
            frac = min(1.0, self._done / total) if total else 0.0
            progress(base + span * frac, f"{label}: {self._done / 1e6:.1f}/{total / 1e6:.1f} MB")
            return super().update(n)

    return _Forward


def _hub_expectation(spec: FileSpec) -> dict:
    """Size and hash the Hub reports for a file (raises when the Hub is unreachable)."""
    url = hub.hf_hub_url(spec.repo_id, spec.repo_filename)
    meta = hub.get_hf_file_metadata(url)
    etag = (meta.etag or "").strip('"').lower()
    exp: dict = {"size": meta.size, "commit": meta.commit_hash}
    if re.fullmatch(r"[0-9a-f]{64}", etag):
        exp["sha256"] = etag
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        exp["git_sha1"] = etag
    return exp


def _download_hf(models_dir: Path, spec: FileSpec, progress: Progress | None, base: float, span: float) -> Path:
    exp = _hub_expectation(spec)
    dest = models_dir / spec.path
    # The repo path is reproduced under local_dir; strip it to land on spec.path.
    local_dir = dest.parent
    for _ in Path(spec.repo_filename).parent.parts:
        local_dir = local_dir.parent
    kwargs = {}
    if progress is not None:
        kwargs["tqdm_class"] = _tqdm_forwarding(progress, spec.path, base, span)
    got = Path(
        hub.hf_hub_download(spec.repo_id, spec.repo_filename, local_dir=local_dir, revision=exp.get("commit"), **kwargs)
    )
    if got.resolve() != dest.resolve():
        os.replace(got, dest)
    problem = _check_expectation(dest, spec, exp)
    if problem:
        dest.unlink(missing_ok=True)
        raise WeightsError(problem)
    _record(
        models_dir,
        spec.path,
        {
            "size": dest.stat().st_size,
            "sha256": exp.get("sha256") or sha256_file(dest),
            "source": spec.source,
            "commit": exp.get("commit"),
            "time": time.time(),
        },
    )
    return dest


def _check_expectation(dest: Path, spec: FileSpec, exp: dict) -> str | None:
    size = dest.stat().st_size
    if exp.get("size") is not None and size != exp["size"]:
        return f"downloaded {size} bytes but the Hub reports {exp['size']}"
    if exp.get("sha256") and sha256_file(dest) != exp["sha256"]:
        return "sha256 differs from the Hub's"
    if exp.get("git_sha1") and git_blob_sha1(dest) != exp["git_sha1"]:
        return "git blob sha1 differs from the Hub's"
    return probe_format(dest, spec.fmt)


def _http_client():
    import httpx

    return httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0))


def _download_url(models_dir: Path, spec: FileSpec, progress: Progress | None, base: float, span: float) -> Path:
    """Streamed, resumable: bytes go to `<dest>.part`; a retry continues from where it stopped."""
    dest = models_dir / spec.path
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with _http_client() as client, client.stream("GET", spec.url, headers=headers) as r:
        if r.status_code == 416:  # the .part is already complete
            pass
        else:
            r.raise_for_status()
            if have and r.status_code != 206:  # server ignored the range: start over
                have = 0
            total = int(r.headers.get("content-length") or 0) + have
            mode = "ab" if have else "wb"
            done = have
            with open(part, mode) as f:
                for chunk in r.iter_bytes(1 << 20):
                    f.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        frac = done / total if total else 0.0
                        progress(base + span * min(frac, 1.0), f"{spec.path}: {done / 1e6:.1f}/{total / 1e6:.1f} MB")
    status, detail = _verify(part, spec, None, deep=True)
    if status != "present":
        part.unlink(missing_ok=True)
        raise WeightsError(detail)
    digest = sha256_file(part)
    os.replace(part, dest)
    _record(
        models_dir,
        spec.path,
        {"size": dest.stat().st_size, "sha256": digest, "source": spec.source, "time": time.time()},
    )
    return dest


def download(
    models_dir: Path | str,
    components: Iterable[str] | None = DEFAULT_DOWNLOAD,
    progress: Progress | None = None,
    force: bool = False,
) -> WeightsReport:
    """Fetch the files of `components` that are missing or corrupt (all of them with `force`), verify them
    and return the new report. Raises WeightsDownloadError listing every file that could not be fetched,
    with the command to fetch it by hand; files that did arrive are kept."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    comps = _components(components)
    names = [c.name for c in comps]
    before = check(models_dir, names)
    todo: list[FileSpec] = []
    for comp in comps:
        for spec, st in zip(comp.files, before.components[comp.name].files, strict=True):
            if force or st.status != "present":
                todo.append(spec)
    failures: list[tuple[str, str, str]] = []
    for k, spec in enumerate(todo):
        base, span = k / max(len(todo), 1), 1 / max(len(todo), 1)
        if progress is not None:
            progress(base, f"downloading {spec.path} from {spec.source}")
        try:
            if spec.repo_id:
                _download_hf(models_dir, spec, progress, base, span)
            else:
                _download_url(models_dir, spec, progress, base, span)
            log.info("downloaded and verified %s", spec.path)
        except Exception as e:  # offline, HTTP errors, verification: all reported together below
            reason = f"{type(e).__name__}: {e}".strip()
            log.warning("download of %s failed: %s", spec.path, reason)
            failures.append((str(models_dir / spec.path), _short(reason), spec.manual(models_dir)))
    if progress is not None:
        progress(1.0, "weights done" if not failures else f"{len(failures)} file(s) failed")
    if failures:
        raise WeightsDownloadError(failures)
    return check(models_dir, names)


def _short(reason: str, limit: int = 300) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"
