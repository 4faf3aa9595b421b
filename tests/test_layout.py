"""The package's layout keeps its promises: import arrows point one way, no cycles, `__init__.py` files are tables of
contents, modules stay short, the README's module map names every module, and Redis is loaded only when used."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "chatsse"
README = (ROOT / "README.md").read_text()

# Lowest first. A module may import from its own layer or a lower one, never a higher one.
LAYERS = [
    # pure: no I/O
    ["record", "sse", "errors", "events", "schema", "completion_request", "chunks", "responses", "guards.detectors"],
    [  # configuration
        "upstreams.config",
        "callers.config",
        "callers.keys",
        "guards.config",
        "tracing.config",
        "prices",
        "config_file",
        "settings",
    ],
    # backends: upstreams, callers' counts, Redis, traces, which upstream made a stored response; guards
    ["upstreams", "callers", "ratelimit", "redis", "tracing", "responses.stored", "background", "guards"],
    ["server"],  # HTTP serving: protocol, middleware, the streaming response, lifecycle
    ["resume"],  # kept replies
    ["relay"],  # where every face starts a reply
    ["faces"],  # the protocols clients speak
    ["preflight", "shared", "app", "terminal", "operate", "simulator"],  # assembling and running
    ["cli", "__main__"],
]
MAX_LINES = 300  # outside simulator/, which is a test fixture with its own wire-level detail
# errors.py is the one table of every failure, a short class per stable code; it grows a row at a time, and
# splitting it would make two places that map failures to statuses.
LONGER = {"errors.py": 340}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name or "__init__"] = path
    return found


def layer_of(module: str) -> int:
    best, rank = "", -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, rank = name, index
    if module == "__init__":
        return 0
    assert rank >= 0, f"chatsse.{module} is in no layer of tests/test_layout.py"
    return rank


def imports(path: Path, known: set[str], at_import_time_only: bool) -> set[str]:
    """The chatsse modules `path` names in its imports: all of them, or (`at_import_time_only`) those it runs when it
    is imported, not inside functions or under TYPE_CHECKING; those include the packages of the modules it
    imports from another package, since importing a package's module runs its `__init__.py` first."""
    tree = ast.parse(path.read_text())
    nodes = list(_run_at_import(tree.body)) if at_import_time_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for target in targets:
            if target == "chatsse" or not target.startswith("chatsse."):
                continue
            name = target.removeprefix("chatsse.")
            if name not in known:
                continue
            found.add(name)
            if at_import_time_only:
                importer = path.relative_to(PACKAGE).parts[0]  # a package's own modules run while it is importing
                parts = name.split(".")
                packages = {".".join(parts[:i]) for i in range(1, len(parts))}
                found.update(package for package in packages if package in known and package != importer)
    return found


def _run_at_import(statements: list[ast.stmt]) -> Iterator[ast.AST]:
    """The statements Python runs when it imports a module: not function bodies, not `if TYPE_CHECKING:` blocks."""
    for statement in statements:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if isinstance(statement, ast.If) and "TYPE_CHECKING" in ast.unparse(statement.test):
            yield from _run_at_import(statement.orelse)
            continue
        yield statement
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _run_at_import(getattr(statement, field, []))


def test_imports_point_from_higher_layers_to_lower_ones() -> None:
    known = set(modules())
    wrong = []
    for name, path in modules().items():
        for target in imports(path, known, at_import_time_only=False):
            package_of_name = name.split(".")[0] == target  # a package's own modules may import its table
            if layer_of(target) > layer_of(name) and not package_of_name:
                wrong.append(f"chatsse.{name} (layer {layer_of(name)}) imports chatsse.{target} ({layer_of(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    known = set(modules())
    graph = {name: imports(path, known, at_import_time_only=True) - {name} for name, path in modules().items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycle = trail[trail.index(target) :] + [target] if target in trail else [node, target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*trail, target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_package_inits_are_tables_of_contents() -> None:
    for name, path in modules().items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        docstring = ast.get_docstring(tree)
        assert docstring, f"{path} has no docstring"
        for node in tree.body[1:]:
            allowed = isinstance(node, ast.Import | ast.ImportFrom)
            allowed |= isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) in ("__all__", "__version__")
            assert allowed, f"{path}: {ast.unparse(node)[:60]!r} is code, not a table of contents"
        if name != "__init__":
            for module in sorted(p.stem for p in path.parent.glob("*.py") if p.stem not in ("__init__", "__main__")):
                assert re.search(rf"^\s*{module}\.py\s", docstring, re.M), f"{path} does not list {module}.py"


def test_every_module_has_a_one_line_docstring_and_stays_short() -> None:
    for path in modules().values():
        source = path.read_text()
        docstring = ast.get_docstring(ast.parse(source))
        assert docstring and docstring.strip(), f"{path} says nothing about what it owns"
        if "simulator" not in path.parts:
            most = LONGER.get(path.name, MAX_LINES)
            assert len(source.splitlines()) <= most, f"{path} has {len(source.splitlines())} lines"


def readme_map() -> set[str]:
    """The modules the README's map names: `  name.py` or `  folder/` (its __init__.py) under chatsse/, and
    `    name.py` inside the folder above; each followed by what it owns."""
    found = re.search(r"<!-- module map -->\n```\n(.*?)```", README, re.S)
    assert found, "the README's module map (after <!-- module map -->) is gone"
    named, folder = set(), ""
    for line in found.group(1).splitlines():
        entry = re.match(r"^( {2}| {4})(\S+)", line)
        if entry is None:
            folder = folder if line.startswith(" ") else ""
            continue
        indent, name = entry.groups()
        if indent == "  ":
            folder = name if name.endswith("/") else ""
            named.add(name + "__init__.py" if folder else name)
        else:
            named.add(folder + name)
    return named


def test_the_readme_module_map_names_every_module_and_nothing_else() -> None:
    named = readme_map()
    actual = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")}
    folders_without_code = {
        f"{path.name}/__init__.py" for path in PACKAGE.iterdir() if path.is_dir() and not any(path.glob("*.py"))
    }
    assert sorted(actual - named) == [], "modules missing from the README's map"
    assert sorted(named - actual - folders_without_code) == [], "the README's map names modules that do not exist"


def test_without_redis_configured_redis_py_is_never_imported() -> None:
    script = """
import sys
from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.upstreams import UpstreamConfig
upstream = UpstreamConfig(name="u", endpoint="http://127.0.0.1:9", deployment="d", api_key="k")
create_app(Settings(upstreams=(upstream,), resume_seconds=30, rate_limit=(5, 60.0)))
print("redis" in sys.modules)
create_app(Settings(upstreams=(upstream,), resume_seconds=30, redis_url="redis://127.0.0.1:9/0"))
print("redis" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_without_tracing_configured_opentelemetry_is_never_imported() -> None:
    script = """
import sys
from chatsse.app import create_app
from chatsse.settings import Settings
from chatsse.tracing.config import tracing_config
from chatsse.upstreams import UpstreamConfig
upstream = UpstreamConfig(name="u", endpoint="http://127.0.0.1:9", deployment="d", api_key="k")
create_app(Settings(upstreams=(upstream,), resume_seconds=30))
print("opentelemetry" in sys.modules)
tracing = tracing_config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, [])
print("opentelemetry" in sys.modules)
create_app(Settings(upstreams=(upstream,), tracing=tracing))
print("opentelemetry" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["False", "False", "True"]


def test_tracing_and_the_upstreams_and_resume_do_not_know_each_other_both_ways() -> None:
    """The upstreams hand tracing small values (Target, Outcome), and the relay links a resumed reply's trace: tracing
    names no upstream or translator, and kept replies name no tracing."""
    known = set(modules())
    for name, path in modules().items():
        targets = imports(path, known, at_import_time_only=False)
        if name.startswith("tracing"):
            assert not {t for t in targets if t.startswith(("upstreams", "chunks"))}, name
        if name.startswith("resume"):
            assert not {t for t in targets if t.startswith("tracing")}, name
