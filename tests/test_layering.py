"""Import layering: protocol <- config <- logsetup <- backend <- server <- cli/demo, a protocol layer free of
I/O, and no import cycle anywhere.

An AST walk over every module under pfxhttp/ (whichever exist when the test runs) checks each import against
the rules below, then looks for cycles in the module graph (Tarjan's strongly connected components; imports
inside functions and under TYPE_CHECKING count: a lazy import is still a dependency); the checkers themselves are
tested on synthetic sources so that a pass means something. A subprocess then imports pfxhttp.protocol and looks
at what really got loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "pfxhttp"

# The pure stdlib modules the sans-IO layer may use: no sockets, files, threads, event loops or processes.
PROTOCOL_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "codecs",
        "collections",
        "dataclasses",
        "enum",
        "functools",
        "itertools",
        "math",
        "operator",
        "re",
        "string",
        "types",
        "typing",
        "unicodedata",
    }
)

# Builtins that perform I/O or import behind the AST's back.
PROTOCOL_FORBIDDEN_CALLS = frozenset({"open", "print", "input", "__import__", "exec", "eval", "breakpoint"})

# The layers, lowest first. "root" is the pfxhttp package itself (or an attribute of it, like __version__).
# demo and cli are peers at the top: the CLI starts the demo, the demo serves through the server layer, and
# neither may import the other's way back (the demo once imported the CLI for its serve loop: a cycle).
LAYERS = ("errors", "protocol", "config", "logsetup", "backend", "server", "demo", "cli")

# For each importing layer, the pfxhttp layers it may import. errors is imported by everyone, so it may import
# nothing of pfxhttp; logsetup reads its settings from the config model.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset({"root", "errors"}),
    "protocol": frozenset({"root", "errors", "protocol"}),
    "config": frozenset({"root", "errors", "protocol", "config"}),
    "logsetup": frozenset({"root", "errors", "protocol", "config", "logsetup"}),
}
FORBIDDEN: dict[str, frozenset[str]] = {
    "backend": frozenset({"server", "demo", "cli"}),
    "server": frozenset({"demo", "cli"}),
    "demo": frozenset({"cli"}),
}


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. pfxhttp.protocol.netstring
    is_package: bool  # an __init__.py: relative imports resolve against the module itself
    source: str


def top_level_names(package_dir: Path) -> frozenset[str]:
    """The modules and subpackages directly under pfxhttp/ (anything else imported from pfxhttp is root)."""
    names = {p.stem for p in package_dir.glob("*.py") if p.stem != "__init__"}
    names |= {p.name for p in package_dir.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    return frozenset(names)


def discover(package_dir: Path) -> list[Module]:
    modules = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = ["pfxhttp", *path.relative_to(package_dir).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules.append(Module(".".join(parts), is_package, path.read_text(encoding="utf-8")))
    return modules


def layer_of(dotted: str, known: frozenset[str]) -> str | None:
    """The pfxhttp layer a dotted module name belongs to; None for a module outside pfxhttp."""
    parts = dotted.split(".")
    if parts[0] != "pfxhttp":
        return None
    if len(parts) == 1 or parts[1] not in known:
        return "root"
    return parts[1]


def _from_base(module: Module, node: ast.ImportFrom) -> str:
    """The module a ``from ... import`` statement imports from, relative levels resolved."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base_parts = package[: len(package) - (node.level - 1)]
    return ".".join([*base_parts, *([node.module] if node.module else [])])


def imported_names(module: Module) -> list[tuple[int, str]]:
    """(line, dotted module name) for every import in ``module``, relative ones resolved.

    ``from pfxhttp import server`` imports the module pfxhttp.server, so names imported from the bare
    package count as submodules. Imports under ``if TYPE_CHECKING`` count as well: the layering is about
    dependencies, not only run time.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(module.source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(module, node)
            if base == "pfxhttp":
                found.extend((node.lineno, f"pfxhttp.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, base))
    return found


def violations(module: Module, known: frozenset[str]) -> list[str]:
    """Every import of ``module`` that breaks the layering (and, in protocol, every I/O escape)."""
    layer = layer_of(module.name, known)
    assert layer is not None
    problems: list[str] = []
    for line, target in imported_names(module):
        where = f"{module.name}:{line}: imports {target}"
        target_layer = layer_of(target, known)
        if target_layer is None:
            if layer == "protocol" and target.split(".")[0] not in PROTOCOL_STDLIB:
                problems.append(f"{where} (the protocol layer may only use pure stdlib modules)")
            continue
        if layer in ALLOWED and target_layer not in ALLOWED[layer]:
            problems.append(f"{where} ({layer} may import only {sorted(ALLOWED[layer])})")
        if target_layer in FORBIDDEN.get(layer, frozenset()):
            problems.append(f"{where} ({layer} must not import {target_layer})")
    if layer == "protocol":
        for node in ast.walk(ast.parse(module.source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in PROTOCOL_FORBIDDEN_CALLS
            ):
                problems.append(f"{module.name}:{node.lineno}: calls {node.func.id}() in the protocol layer")
    return problems


def import_graph(modules: list[Module]) -> dict[str, frozenset[str]]:
    """module -> the pfxhttp modules it imports. ``from pfxhttp.config import auth`` names the submodule
    pfxhttp.config.auth when it exists, else the package (a name defined in its __init__); an imported name
    that is a class or function counts as its module."""
    names = {m.name for m in modules}

    def existing(dotted: str) -> str | None:
        while dotted and dotted not in names:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    graph: dict[str, frozenset[str]] = {}
    for module in modules:
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(module.source)):
            if isinstance(node, ast.Import):
                targets.update(existing(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _from_base(module, node)
                targets.update(existing(f"{base}.{alias.name}") for alias in node.names)
        graph[module.name] = frozenset(t for t in targets if t is not None and t != module.name)
    return graph


def import_cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted, sorted: the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the number of modules (about 100)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, frozenset())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


# --- the real tree ------------------------------------------------------------------------------------


def test_the_protocol_layer_exists() -> None:
    names = {m.name for m in discover(PACKAGE_DIR)}
    assert {
        "pfxhttp.errors",
        "pfxhttp.protocol",
        "pfxhttp.protocol.netstring",
        "pfxhttp.protocol.socketmap",
        "pfxhttp.protocol.policy",
    } <= names


def test_every_module_follows_the_layering() -> None:
    known = top_level_names(PACKAGE_DIR)
    problems = [p for module in discover(PACKAGE_DIR) for p in violations(module, known)]
    assert problems == []


# The config parsers' cycle (keytree -> loader -> overrides -> keytree, through a late import) is the config
# owners' to break (architecture review, 1b); listed here so that any OTHER cycle fails now, and this entry must
# go when that one is gone (test_known_cycles_still_exist).
KNOWN_CYCLES = [["pfxhttp.config.keytree", "pfxhttp.config.loader", "pfxhttp.config.overrides"]]


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph(discover(PACKAGE_DIR)))
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []


def test_known_cycles_still_exist() -> None:
    cycles = import_cycles(import_graph(discover(PACKAGE_DIR)))
    assert [c for c in KNOWN_CYCLES if c not in cycles] == []


def test_importing_the_protocol_layer_loads_no_io_library() -> None:
    heavy = [
        "trio",
        "socket",
        "ssl",
        "asyncio",
        "selectors",
        "subprocess",
        "httpx",
        "httpcore",
        "h11",
        "httptools",
        "yaml",
        "structlog",
        "jinja2",
        "orjson",
        "sqlite3",
        "pfxhttp.config",
        "pfxhttp.backend",
        "pfxhttp.server",
        "pfxhttp.cli",
    ]
    code = (
        f"import sys\nimport pfxhttp.protocol\nprint(','.join(sorted(set(sys.modules) & {set(heavy)!r})))\n"
    )
    result = subprocess.run(  # a fresh interpreter: pytest itself has loaded most of these
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


# --- the checker, on synthetic sources -------------------------------------------------------------------

KNOWN = frozenset({"errors", "protocol", "config", "backend", "server", "cli", "logsetup", "demo"})


SUBPACKAGES = frozenset({"pfxhttp.protocol", "pfxhttp.config", "pfxhttp.backend", "pfxhttp.server"})


def check(name: str, source: str) -> list[str]:
    return violations(Module(name, name in SUBPACKAGES, source), KNOWN)


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("pfxhttp.protocol.x", "import trio"),
        ("pfxhttp.protocol.x", "import socket"),
        ("pfxhttp.protocol.x", "from asyncio import sleep"),
        ("pfxhttp.protocol.x", "import os.path"),
        ("pfxhttp.protocol.x", "import importlib"),
        ("pfxhttp.protocol.x", "from pfxhttp.config import model"),
        ("pfxhttp.protocol.x", "from pfxhttp import logsetup"),
        ("pfxhttp.protocol.x", "from .. import server"),
        ("pfxhttp.protocol.x", "from ..backend.http11 import Client"),
        ("pfxhttp.protocol", "from ..config import model"),
        ("pfxhttp.protocol.x", "x = open('/etc/passwd').read()"),
        ("pfxhttp.protocol.x", "m = __import__('socket')"),
        ("pfxhttp.protocol.x", "def f():\n    import yaml\n"),  # nested imports too
        ("pfxhttp.protocol.x", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import trio\n"),
        ("pfxhttp.config.loader", "from pfxhttp.backend import template"),
        ("pfxhttp.config.loader", "from pfxhttp.server.app import App"),
        ("pfxhttp.config", "from .. import cli"),
        ("pfxhttp.config.loader", "from pfxhttp import logsetup"),
        ("pfxhttp.backend.pool", "from pfxhttp.server import connection"),
        ("pfxhttp.backend.pool", "import pfxhttp.cli"),
        ("pfxhttp.backend", "from ..cli import main"),
        ("pfxhttp.server.app", "import pfxhttp.cli"),
        ("pfxhttp.server.app", "from .. import cli"),
        ("pfxhttp.errors", "from pfxhttp.protocol import netstring"),
        ("pfxhttp.demo.run", "from pfxhttp.cli import main"),
        ("pfxhttp.demo.run", "def f():\n    from .. import cli\n"),
        ("pfxhttp.server.daemon", "from pfxhttp.demo.run import run_demo"),
        ("pfxhttp.backend.pool", "import pfxhttp.demo.httpd"),
        ("pfxhttp.logsetup", "from pfxhttp.backend import runtime"),
        ("pfxhttp.logsetup", "from pfxhttp.server import app"),
    ],
)
def test_checker_catches(name: str, source: str) -> None:
    assert check(name, source) != []


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("pfxhttp.protocol.x", "import enum, re\nfrom typing import Final"),
        ("pfxhttp.protocol.x", "from collections.abc import Iterator\nfrom dataclasses import dataclass"),
        ("pfxhttp.protocol.x", "from pfxhttp.errors import NetstringError\nfrom . import netstring"),
        ("pfxhttp.protocol.x", "from .netstring import encode\nfrom ..errors import PolicyError"),
        ("pfxhttp.protocol.x", "from pfxhttp import errors, __version__"),
        ("pfxhttp.config.loader", "import yaml\nfrom pfxhttp.protocol.socketmap import SocketmapReply"),
        ("pfxhttp.config.loader", "from . import model\nfrom ..errors import ConfigError"),
        ("pfxhttp.backend.pool", "import trio\nfrom pfxhttp.config import model\nfrom . import template"),
        ("pfxhttp.backend.pool", "from pfxhttp.protocol import policy\nfrom pfxhttp import logsetup"),
        ("pfxhttp.server.app", "from pfxhttp.backend import pool\nfrom ..config import loader\nimport trio"),
        ("pfxhttp.cli", "from pfxhttp.server import app\nfrom pfxhttp import backend, config"),
        ("pfxhttp.logsetup", "import structlog\nfrom pfxhttp.config.model import LoggingConfig"),
        (
            "pfxhttp.demo.run",
            "from pfxhttp.server.daemon import serve_until_signal\nfrom pfxhttp import logsetup",
        ),
        ("pfxhttp.cli", "def f():\n    from pfxhttp.demo.run import run_demo\n"),
        ("pfxhttp.errors", "from collections.abc import Iterable\nfrom dataclasses import dataclass"),
    ],
)
def test_checker_accepts(name: str, source: str) -> None:
    assert check(name, source) == []


def test_relative_imports_resolve_against_the_package() -> None:
    package = Module("pfxhttp.protocol", True, "from . import netstring\nfrom .. import errors")
    assert [t for _, t in imported_names(package)] == ["pfxhttp.protocol", "pfxhttp.errors"]
    module = Module("pfxhttp.protocol.policy", False, "from . import netstring\nfrom ..server import app")
    assert [t for _, t in imported_names(module)] == ["pfxhttp.protocol", "pfxhttp.server"]


def graph_of(sources: dict[str, str]) -> dict[str, frozenset[str]]:
    return import_graph([Module(name, name in SUBPACKAGES, source) for name, source in sources.items()])


def test_cycle_checker_finds_a_lazy_cycle_between_layers() -> None:
    # The shape the demo had: the CLI imports the demo inside a function, the demo imports the CLI.
    graph = graph_of(
        {
            "pfxhttp.cli": "def f():\n    from pfxhttp.demo.run import run_demo\n",
            "pfxhttp.demo.run": "from pfxhttp.cli import serve_until_signal",
            "pfxhttp.server.daemon": "from pfxhttp.server.app import Server",
            "pfxhttp.server.app": "import trio",
        }
    )
    assert import_cycles(graph) == [["pfxhttp.cli", "pfxhttp.demo.run"]]


def test_cycle_checker_sees_submodules_imported_from_a_package() -> None:
    graph = graph_of(
        {
            "pfxhttp.config": "from pfxhttp.config.loader import load_config",
            "pfxhttp.config.loader": "from pfxhttp.config import overrides",
            "pfxhttp.config.overrides": "from . import keytree",
            "pfxhttp.config.keytree": "def f():\n    from pfxhttp.config import loader\n",
            "pfxhttp.config.model": "from pfxhttp.config import values",  # values: not a module here
        }
    )
    assert graph["pfxhttp.config.loader"] == {"pfxhttp.config.overrides"}
    assert graph["pfxhttp.config.model"] == {"pfxhttp.config"}
    assert import_cycles(graph) == [
        ["pfxhttp.config.keytree", "pfxhttp.config.loader", "pfxhttp.config.overrides"]
    ]


def test_cycle_checker_accepts_a_layered_graph() -> None:
    graph = graph_of(
        {
            "pfxhttp.cli": "from pfxhttp.server import daemon\ndef f():\n    from pfxhttp.demo import run\n",
            "pfxhttp.demo.run": "from pfxhttp.server.daemon import serve_until_signal",
            "pfxhttp.server.daemon": "from pfxhttp.server.app import Server\nfrom .app import Server as S",
            "pfxhttp.server.app": "import trio\nfrom pfxhttp.errors import BindError",
            "pfxhttp.errors": "",
        }
    )
    assert import_cycles(graph) == []
