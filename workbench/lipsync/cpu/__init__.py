"""The weight-free CPU renderer: audio → mouth states by classical measures, faces by warping the avatar's
own frames (`renderer`), with its audio front end (`frontend`), the own-mouth bank (`bank`), the face rig and
warp geometry (`geometry`), real mouth interiors (`interior`, library in `assets/`) and the painted interior
(`paint`). Imports no torch: this is the path that runs on a machine without a GPU or weights.
"""

from workbench.lipsync.cpu.bank import BankParams, MouthBank
from workbench.lipsync.cpu.frontend import AudioFormatError, MouthFrontend, MouthParams, MouthState
from workbench.lipsync.cpu.renderer import CPURenderer, RenderInputError, measure_openness

__all__ = [
    "AudioFormatError",
    "BankParams",
    "CPURenderer",
    "MouthBank",
    "MouthFrontend",
    "MouthParams",
    "MouthState",
    "RenderInputError",
    "measure_openness",
]
