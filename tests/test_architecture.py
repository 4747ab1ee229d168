"""The import graph stays as docs/ARCHITECTURE.md draws it: every package imports only the floors below it (imports
inside functions count), so there is no circle; the ground floor imports nothing of the project, and no torch
except in its preprocessing."""
import ast
from pathlib import Path

from tests.conftest import REPO

# Floors, bottom first. A package may import its own modules and any package on a lower floor, nothing else.
FLOORS = [
    ["tagger"],                                # the model contract: decoder, labels, presets, metadata, keys
    ["photo_store", "training"],               # photos and labels at rest; datasets, models, recipes, archives
    ["handler"],                               # TorchServe's handler (builds the network with training.model)
    ["serving"],                               # start/stop TorchServe and gunicorn, model versions
    ["annotation_ui"],                         # the labelling page (a blueprint) and its jobs
    ["gateway"],                               # the Flask app: assembles the API and the blueprint
    ["photo_library", "fuzz"],                 # tools: the photo folder through the gateway's HTTP API; fuzzing
    ["benchmarks"],                            # measures any of the above
]
FLOOR = {pkg: i for i, pkgs in enumerate(FLOORS) for pkg in pkgs}
TORCH = {"torch", "torchvision", "onnxruntime", "cv2"}


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every absolute import in ``path``, at module top or inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def sources():
    for pkg in FLOOR:
        yield from ((pkg, p) for p in sorted((REPO / pkg).rglob("*.py")))


def test_every_package_is_on_a_floor():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} | {"benchmarks"}
    assert packages <= set(FLOOR) | {"tests", "samples"}, packages - set(FLOOR)


def test_imports_go_down_only():
    wrong = []
    for pkg, path in sources():
        for line, module in imports(path):
            top = module.split(".")[0]
            if top in FLOOR and top != pkg and FLOOR[top] >= FLOOR[pkg]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module} "
                             f"({pkg} is on floor {FLOOR[pkg]}, {top} on floor {FLOOR[top]})")
    assert not wrong, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_the_ground_floor_is_torch_free_but_for_presets():
    heavy = [f"{p.relative_to(REPO)}:{line} imports {m}" for pkg, p in sources() if pkg == "tagger"
             and p.name != "presets.py" for line, m in imports(p) if m.split(".")[0] in TORCH]
    assert not heavy, heavy


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from gateway.api import error\n")
    assert imports(bad) == [(2, "gateway.api")]

