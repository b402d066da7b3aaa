"""The package's layout holds: no module imports one of a higher stage, no import cycle, no file too long.

The stages follow the data path (docs/architecture.md): plain helpers and settings, then media and
weights, faces, avatars, lipsync, the offline speech models, the transports and evaluation, the one engine
composing them, and the UI and CLI on top. A module may import its own package and lower stages only; two
packages of one stage (realtime and evaluation) do not import each other. Read from the source (AST), so a
function-local or `TYPE_CHECKING` import counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workbench"
MAX_LINES = 750

# The stage of each top-level module or package of `workbench` (lower imports nothing higher).
STAGES: dict[str, int] = {
    # 0: no project imports beyond each other's constants
    "workbench": 0,  # the package itself
    "config": 0,
    "plain": 0,
    "atomic": 0,
    "zerogpu": 0,
    "tables": 0,
    # 1: files and devices: media, weights, timing logs, the disk budget
    "timing": 1,
    "weights": 1,
    "disk_budget": 1,
    "media": 1,
    # 2-5: the data path
    "faces": 2,
    "avatars": 3,
    "lipsync": 4,
    "voice": 5,  # offline speech models (ASR, TTS, VAD): below the conversation voices that use them
    # 6: the one engine composing the data path (it imports only stages 0-5)
    "engine": 6,
    # 7: what consumes the engine's renders and streams: transports and scoring (siblings, never each other)
    "realtime": 7,
    "integrations": 7,
    "evaluation": 7,
    # 8: views and entry points
    "ui": 8,
    "cli": 8,
}

# Known upward imports, each with its reason: (importing module or package, imported module or package).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}

# Files over MAX_LINES, each waiting on the issue that splits it (the check skips them only while they exist).
TOO_LONG_FOR_NOW: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _stage_key(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "workbench"


def _targets(node: ast.ImportFrom | ast.Import) -> list[str]:
    """The project modules an import statement names (`from pkg import submodule` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    if node.level or not node.module or not node.module.startswith("workbench"):
        return []
    subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
    plain = [a for a in node.names if f"{node.module}.{a.name}" not in MODULES]
    return subs + ([node.module] if plain and node.module in MODULES else [])


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(module: str, top_level_only: bool) -> set[str]:
    """What `module` imports: everywhere, or only what runs when it is imported (not TYPE_CHECKING, not in a def)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_targets(node))
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    if top_level_only:
        visit(tree.body)
    else:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.update(_targets(node))
    found.discard(module)
    return found


def _allowed(importer: str, imported: str) -> bool:
    for (a, b), _why in ALLOWED_UPWARD.items():
        if (importer == a or importer.startswith(a + ".")) and (imported == b or imported.startswith(b + ".")):
            return True
    return False


def test_every_top_level_module_has_a_stage():
    missing = sorted({_stage_key(m) for m in MODULES} - set(STAGES))
    assert not missing, f"give these a stage in tests/test_layout.py (and docs/architecture.md): {missing}"


def test_no_module_imports_a_higher_stage_or_a_sibling_package():
    wrong = []
    for module in sorted(MODULES):
        mine = _stage_key(module)
        for imported in sorted(_imports(module, top_level_only=False)):
            theirs = _stage_key(imported)
            if theirs == mine or theirs == "workbench" or _allowed(module, imported):
                continue
            if STAGES[theirs] >= STAGES[mine]:
                wrong.append(f"{module} (stage {STAGES[mine]}) imports {imported} (stage {STAGES[theirs]})")
    assert not wrong, "upward or sibling imports:\n" + "\n".join(wrong)


def test_the_allowed_exceptions_are_still_needed():
    used = {
        pair
        for module in MODULES
        for imported in _imports(module, top_level_only=False)
        for pair in ALLOWED_UPWARD
        if (module == pair[0] or module.startswith(pair[0] + "."))
        and (imported == pair[1] or imported.startswith(pair[1] + "."))
    }
    assert used == set(ALLOWED_UPWARD), f"no longer needed, delete: {sorted(set(ALLOWED_UPWARD) - used)}"


def test_no_import_cycle_between_modules():
    graph = {m: _imports(m, top_level_only=True) for m in MODULES}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n) :] + [n])
            elif n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_a_real_upward_import_and_a_cycle(tmp_path):
    # The AST reading is what the two tests above rely on: it must find imports inside functions,
    # skip TYPE_CHECKING blocks for cycles, and name submodules imported with `from pkg import sub`.
    assert "workbench.realtime.voices.contract" in _imports("workbench.realtime.session", top_level_only=True)
    assert "workbench.voice.espeak" in _imports("workbench.voice.tts", top_level_only=True)
    routes = _imports("workbench.realtime.routes", top_level_only=False)
    assert "workbench.realtime.server" in routes  # under TYPE_CHECKING: a dependency, not a cycle
    assert "workbench.realtime.server" not in _imports("workbench.realtime.routes", top_level_only=True)


def test_no_file_under_workbench_is_too_long():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES and rel not in TOO_LONG_FOR_NOW:
            long.append(f"{rel}: {n} lines")
    assert not long, f"files over {MAX_LINES} lines (split by job):\n" + "\n".join(long)


def _third_party(module: str) -> set[str]:
    """The top-level names of everything outside the project that `module` imports, anywhere in it."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - {"workbench"}


def test_the_two_renderer_families_stay_apart():
    # lipsync/ holds the shared contract and plumbing; each model family is its own package. Neither family
    # imports the other, the shared modules import neither, and the CPU renderer imports no torch at all
    # (it is the path that runs on a machine without a GPU or weights).
    cpu, musetalk = "workbench.lipsync.cpu", "workbench.lipsync.musetalk"
    assert cpu in MODULES and musetalk in MODULES and f"{cpu}.renderer" in MODULES
    wrong = []
    for module in sorted(m for m in MODULES if m.startswith("workbench.lipsync")):
        family = cpu if module.startswith(cpu) else musetalk if module.startswith(musetalk) else None
        for imported in sorted(_imports(module, top_level_only=False)):
            for other in (cpu, musetalk):
                if other != family and (imported == other or imported.startswith(other + ".")):
                    wrong.append(f"{module} imports {imported}")
        if family == cpu and {"torch", "diffusers", "transformers"} & _third_party(module):
            wrong.append(f"{module} imports a deep-learning library")
    assert not wrong, "renderer families mixed:\n" + "\n".join(wrong)
    assert "torch" in _third_party(f"{musetalk}.renderer")  # the reading sees a function-local third-party import


def test_every_module_is_in_the_architecture_map():
    """docs/architecture.md names every module, so the map a newcomer reads first cannot fall behind the tree."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        p.relative_to(PACKAGE).as_posix()
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.name != "__main__.py" and f"`{p.relative_to(PACKAGE).as_posix()}`" not in doc
    ]
    assert not missing, f"add these to the module map in docs/architecture.md: {missing}"
