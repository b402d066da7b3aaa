"""Reading the published face-model checkpoints without their training frameworks.

The official files are pickles written by other code bases: `dw-ll_ucoco_384.pth` is an mmengine checkpoint whose
`meta` and `message_hub` hold numpy arrays and mmengine objects, `resnet18-5c106cde.pth` predates zip serialisation.
`torch.load(weights_only=True)` refuses the first and plain unpickling would need mmengine installed, so we unpickle
with an allow-list: tensor rebuilding, containers and numpy arrays are rebuilt, every other class becomes an inert
`OpaqueObject` that only records its arguments. Nothing outside the allow-list is ever called.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

# the project's weight errors, so callers catch one family; a missing file is reported like any other missing weight
from workbench.weights import MissingWeightsError, WeightsError

__all__ = [
    "CheckpointError",
    "FaceModelInputError",
    "MissingWeightsError",
    "OpaqueObject",
    "check_bgr_image",
    "extract_state_dict",
    "load_strict",
    "read_checkpoint",
    "resolve_device",
]

log = logging.getLogger(__name__)


class CheckpointError(WeightsError):
    """A weights file cannot be read, or its keys do not match the architecture it should hold."""


class FaceModelInputError(ValueError):
    """An image or box handed to a face model cannot be used (wrong shape, dtype, empty box)."""


class OpaqueObject:
    """Stands in for a pickled object of a class outside the allow-list (e.g. mmengine's HistoryBuffer)."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


_ALLOWED = {
    "collections": {"OrderedDict", "defaultdict"},
    "builtins": {
        "set",
        "frozenset",
        "slice",
        "complex",
        "tuple",
        "list",
        "dict",
        "int",
        "float",
        "bool",
        "str",
        "bytes",
        "bytearray",
    },
    "_codecs": {"encode"},
    "codecs": {"encode"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "torch": {"Size", "device", "Tensor"},
    "torch.nn.parameter": {"Parameter"},
    "torch._tensor": {"_rebuild_from_type_v2"},
    "torch._utils": {
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_device_tensor_from_numpy",
    },
}


def _allowed(module: str, name: str) -> bool:
    if name in _ALLOWED.get(module, ()):
        return True
    if module == "torch" and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)):
        return True
    return module == "numpy.dtypes" and name.endswith("DType")


_opaque_classes: dict[str, type] = {}


def _opaque(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _opaque_classes:
        _opaque_classes[key] = type(name, (OpaqueObject,), {"qualname": key})
    return _opaque_classes[key]


class _AllowListUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if _allowed(module, name):
            return super().find_class(module, name)
        log.debug("checkpoint holds %s.%s; kept as an opaque object", module, name)
        return _opaque(module, name)


# torch.load takes a "pickle module": anything with Unpickler and load.
_allow_list_pickle = SimpleNamespace(
    Unpickler=_AllowListUnpickler,
    load=lambda f, **kw: _AllowListUnpickler(f, **kw).load(),
    __name__="workbench_allow_list_pickle",
)


def read_checkpoint(path: str | Path) -> Any:
    """Unpickle a torch checkpoint onto the CPU; foreign classes come back as `OpaqueObject`s."""
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError([path])
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_allow_list_pickle)
    except Exception as exc:  # corrupt, truncated or not a torch file at all
        raise CheckpointError(f"cannot read weights file {path}: {type(exc).__name__}: {exc}") from exc


def extract_state_dict(obj: Any, path: str | Path, containers: tuple[str, ...] = ("state_dict",)) -> dict[str, Any]:
    """The tensor dict inside a checkpoint: the object itself, or the first of `containers` it holds."""
    for key in containers:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds no state dict (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path} is not a plain state dict: entries {bad[:5]} are not named tensors")
    return dict(obj)


def _examples(keys: list[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", … (+{len(keys) - n})" if len(keys) > n else "")


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """`load_state_dict(strict=True)`, with a message that names the file and the mismatching keys.

    BatchNorm `num_batches_tracked` counters absent from checkpoints older than torch 0.4.1 are not an error.
    """
    own = module.state_dict()
    sd = dict(state_dict)
    for key in own:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = own[key]
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    mismatched = sorted(
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches ({_examples(mismatched, 3)})")
        raise CheckpointError(f"{path} is not a {what} checkpoint: " + "; ".join(parts))
    module.load_state_dict(sd, strict=True)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or 'auto' picks the first CUDA device when there is one, else the CPU."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_bgr_image(image: Any, what: str = "image") -> None:
    """Raise `FaceModelInputError` unless `image` is an (H, W, 3) uint8 array of positive size."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise FaceModelInputError(f"{what} must be an (H, W, 3) BGR array, got {type(image).__name__} {shape}")
    if image.dtype != np.uint8:
        raise FaceModelInputError(f"{what} must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise FaceModelInputError(f"{what} is empty: {image.shape}")
