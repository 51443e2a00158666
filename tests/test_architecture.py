"""The provider's shape, read from its source: layers, the engine's packages, no circles.

Imports are read with :mod:`ast` from every module, those inside functions and under
``TYPE_CHECKING`` included, so a late import cannot hide a wrong direction. The expected
shape is the one ARCHITECTURE.md draws; the test also checks that the document names
every package and module of the engine and nothing that is not there.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from voipstudio_provider.engine import MOVED_MODULES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugins" / "voipstudio_provider"
ENGINE = PACKAGE / "engine"

#: The ground: the engine's only top-level modules, importable by every package.
GROUND = ("layout", "s3objects", "summaries")
#: The engine's packages, lowest first: each may import only itself, the ground and the
#: packages before it.
ENGINE_ORDER = ("subjects", "exports", "archive", "evidence", "deletion")
#: The provider's layers, lowest first (ARCHITECTURE.md): a module may import its own
#: layer and those before it. A module belongs to the layer of its longest listed prefix:
#: the purge's approval operator is the purge DAG's own step, built on its task bodies.
LAYERS = (
    ("data", ("endpoints", "exceptions", "get_provider_info")),
    ("hooks", ("hooks",)),
    ("engine", ("engine",)),
    ("command", ("verify_manifest",)),
    ("operators", ("operators", "transfers")),
    ("tasks", ("tasks", "operators.purge_approval")),
    ("ui", ("ui",)),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def provider_imports(path: Path) -> set[str]:
    """Every ``voipstudio_provider`` module ``path`` imports, at any depth of its code."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # ``from pkg import module`` names a module; ``from module import name`` not.
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
    return {imported for imported in found if imported.startswith("voipstudio_provider")}


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative).is_dir()


def provider_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def engine_place(module: str) -> str:
    """``ground``, a package name, or ``engine`` (the package's own ``__init__``)."""
    parts = module.split(".")[2:]
    if not parts:
        return "engine"
    return "ground" if parts[0] in GROUND else parts[0]


def layer_of(module: str) -> int:
    if module == "voipstudio_provider":
        return 0  # the package's version
    inside = module.split(".", 1)[1]
    ranked = [
        (len(prefix), rank)
        for rank, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if inside == prefix or inside.startswith(prefix + ".")
    ]
    assert ranked, f"{module} is in no layer of ARCHITECTURE.md"
    return max(ranked)[1]


def test_the_engine_top_level_holds_only_the_ground_and_the_packages():
    modules = sorted(p.stem for p in ENGINE.glob("*.py") if p.name != "__init__.py")
    packages = sorted(p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists())
    assert modules == sorted(GROUND)
    assert packages == sorted(ENGINE_ORDER)


@pytest.mark.parametrize("package", ENGINE_ORDER)
def test_every_package_says_what_it_owns_and_what_it_may_import(package):
    module = importlib.import_module(f"voipstudio_provider.engine.{package}")
    doc = module.__doc__ or ""
    assert "May import:" in doc, f"engine.{package} does not say what it may import"
    for path in sorted((ENGINE / package).glob("*.py")):
        if path.name != "__init__.py":
            assert f":mod:`.{path.stem}`" in doc, f"engine.{package} does not name {path.stem}"


def test_each_engine_package_imports_only_itself_the_ground_and_packages_below():
    wrong = []
    for name, path in provider_modules().items():
        if not name.startswith("voipstudio_provider.engine."):
            continue
        place = engine_place(name)
        if place == "ground":
            allowed = {"ground"}
        else:
            allowed = {"ground", place, *ENGINE_ORDER[: ENGINE_ORDER.index(place)]}
        for imported in provider_imports(path):
            if imported == "voipstudio_provider.engine" and place in ENGINE_ORDER:
                continue  # a package's ``__init__`` answers for the module it replaced
            if not imported.startswith("voipstudio_provider.engine"):
                continue  # the layers' own test judges imports outside the engine
            if engine_place(imported) not in allowed:
                wrong.append(f"{name} ({place}) imports {imported}")
    assert wrong == []


def test_no_layer_imports_one_above_it():
    wrong = [
        f"{name} imports {imported}"
        for name, path in provider_modules().items()
        for imported in provider_imports(path)
        if layer_of(imported) > layer_of(name)
    ]
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_modules_or_between_engine_packages():
    modules = provider_modules()
    graph = {
        name: {i for i in provider_imports(path) if i in modules and i != name}
        for name, path in modules.items()
    }
    # A package's ``__init__`` is where Python starts its modules; only real imports count.
    assert _cycles(graph) == []
    packages: dict[str, set[str]] = {}
    for name, imported in graph.items():
        if name.startswith("voipstudio_provider.engine."):
            for other in imported:
                if other.startswith("voipstudio_provider.engine.") and (
                    engine_place(other) != engine_place(name)
                ):
                    packages.setdefault(engine_place(name), set()).add(engine_place(other))
    assert _cycles(packages) == []


def test_the_cycle_finder_sees_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_architecture_md_names_every_engine_module_and_only_those():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    on_disk = {
        path.relative_to(PACKAGE).as_posix()
        for path in ENGINE.rglob("*.py")
        if path.name != "__init__.py"
    }
    for package in ENGINE_ORDER:
        assert f"`engine/{package}/`" in text, f"ARCHITECTURE.md does not draw engine/{package}/"
    named = set(re.findall(r"engine/(?:\w+/)?\w+\.py", text))
    assert named - on_disk == set(), "ARCHITECTURE.md names modules that do not exist"
    listed = {
        f"engine/{package}/{stem}.py"
        for package, stems in re.findall(r"`engine/(\w+)/`: ([^\n]+)", text)
        for stem in re.findall(r"`(\w+)`", stems)
    } | {f"engine/{stem}.py" for stem in re.findall(r"`engine/(\w+)\.py`", text)}
    assert on_disk - listed == set(), "ARCHITECTURE.md leaves these modules out"


# The module paths of the flat engine of earlier releases keep working for one release.


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_earlier_module_path_still_imports_with_a_deprecation_warning(old):
    dotted = f"voipstudio_provider.engine.{old}"
    new = [importlib.import_module(f"voipstudio_provider.engine.{m}") for m in MOVED_MODULES[old]]
    name = next(
        n
        for n, value in vars(new[0]).items()
        if not n.startswith("_") and getattr(value, "__module__", None) == new[0].__name__
    )
    sys.modules.pop(dotted, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        namespace: dict = {}
        exec(f"from {dotted} import {name}", namespace)
    assert namespace[name] is vars(new[0])[name]
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert deprecations, f"importing {name} from {dotted} gave no DeprecationWarning"
    assert f"{new[0].__name__}" in str(deprecations[0].message)
    assert deprecations[0].filename == "<string>", "the warning points at importlib"


def test_the_earlier_policy_module_answers_for_its_three_successors():
    sys.modules.pop("voipstudio_provider.engine.policy", None)
    with pytest.warns(DeprecationWarning, match="legal_hold or .*retention"):
        policy = importlib.import_module("voipstudio_provider.engine.policy")
    from voipstudio_provider.engine.deletion.retention import parse_retention_policy
    from voipstudio_provider.engine.subjects.legal_hold import LegalHold
    from voipstudio_provider.engine.subjects.phone_numbers import normalize_number

    assert policy.LegalHold is LegalHold
    assert policy.parse_retention_policy is parse_retention_policy
    assert policy.normalize_number is normalize_number
    assert {"LegalHold", "parse_legal_hold", "retention_cutoff"} <= set(policy.__all__)
    with pytest.raises(AttributeError):
        policy.no_such_name  # noqa: B018


def test_a_package_named_like_an_earlier_module_answers_for_its_names():
    from voipstudio_provider.engine import archive
    from voipstudio_provider.engine.archive import writer

    with pytest.warns(DeprecationWarning, match=r"engine\.archive\.writer\.archive_batch"):
        assert archive.archive_batch is writer.archive_batch
    with pytest.raises(AttributeError):
        archive.no_such_name  # noqa: B018
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from voipstudio_provider.engine.archive import writer as again  # a module: no warning
    assert again is writer


def test_retention_deletes_only_resources_a_hold_may_name():
    from voipstudio_provider.engine.deletion.retention import RETENTION_RESOURCES
    from voipstudio_provider.engine.subjects.legal_hold import HOLD_RESOURCES

    assert set(RETENTION_RESOURCES) < set(HOLD_RESOURCES)


def test_the_changelog_lists_every_earlier_module_path():
    changelog = (ROOT / "docs" / "changelog.md").read_text()
    for old, new in MOVED_MODULES.items():
        assert f"| `engine.{old}` | `engine.{new[0]}`" in changelog


def test_the_hook_module_stays_one_that_reads_in_one_sitting():
    # Its seams (session, retries, records, downloads) are modules beside it.
    lines = (PACKAGE / "hooks" / "voipstudio.py").read_text().count("\n")
    assert lines < 400, f"hooks/voipstudio.py has {lines} lines"


def test_the_auditors_command_imports_no_airflow():
    code = (
        "import sys, voipstudio_provider.verify_manifest, voipstudio_provider.engine.policy;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    )
    shown = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        env={"PYTHONPATH": str(PACKAGE.parent), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "[]"
