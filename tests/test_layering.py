"""Import layering: protocol <- config <- backend <- server <- cli, and a protocol layer free of I/O.

An AST walk over every module under pfxhttp/ (whichever exist when the test runs) checks each import against
the rules below; the checker itself is tested on synthetic sources so that a pass means something. A
subprocess then imports pfxhttp.protocol and looks at what really got loaded.
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
LAYERS = ("errors", "protocol", "config", "backend", "server", "cli")

# For each importing layer, the pfxhttp layers it may import. Layers absent here (logsetup, demo, ...) are
# not constrained by this test. errors is imported by everyone, so it may import nothing of pfxhttp.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset({"root", "errors"}),
    "protocol": frozenset({"root", "errors", "protocol"}),
    "config": frozenset({"root", "errors", "protocol", "config"}),
}
FORBIDDEN: dict[str, frozenset[str]] = {
    "backend": frozenset({"server", "cli"}),
    "server": frozenset({"cli"}),
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
            if node.level:
                package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
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

KNOWN = frozenset({"errors", "protocol", "config", "backend", "server", "cli", "logsetup"})


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
        ("pfxhttp.logsetup", "import structlog"),
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
