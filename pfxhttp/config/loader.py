"""Load a pfxhttp YAML file (the format of the Go project croessner/pfxhttp) into the frozen model.

A config written for upstream pfxhttp loads unchanged (if the files it names exist: secret files, private
keys, jwt_db_path's directory): keys this version does not implement yet are accepted without validation and
listed in :attr:`Config.warnings`; every other unknown key is an error with the closest known spelling. All
problems of a file are collected and raised together as :class:`~pfxhttp.errors.ConfigErrors`, in file
order, each with ``file:line:column`` and its dotted key path.
``PFXHTTP_*`` environment variables (:mod:`pfxhttp.config.overrides`) are applied over the file when the
caller passes an environment: only the command line does, so this layer stays pure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from yaml.nodes import MappingNode

from pfxhttp.config.entries import check_keys, parse_section
from pfxhttp.config.model import (
    Config,
    EntryConfig,
    EntryKind,
    ServerConfig,
)
from pfxhttp.config.overrides import apply_overrides, overrides_from
from pfxhttp.config.serversection import parse_server
from pfxhttp.config.trust import read_config_bytes
from pfxhttp.config.yamlnodes import (
    Problems,
    compose,
    is_null,
    mapping_items,
)
from pfxhttp.errors import ConfigError, ConfigErrors, Location

# Upstream's search order (viper AddConfigPath); "$HOME" is expanded when searching, not at import. As root
# only the absolute system entries are searched: a pfxhttp.yml planted in the working directory or in $HOME
# (sudo keeps the caller's HOME) would otherwise run its author's configuration with root's rights.
DEFAULT_SEARCH_PATH: tuple[Path, ...] = (
    Path("/usr/local/etc/pfxhttp/pfxhttp.yml"),
    Path("/etc/pfxhttp/pfxhttp.yml"),
    Path("$HOME/.pfxhttp/pfxhttp.yml"),
    Path("pfxhttp.yml"),
)

TOP_KEYS = ("server", "socket_maps", "policy_services")
TOP_DEFERRED = ("dovecot_sasl",)


def search_path(euid: int | None = None) -> tuple[Path, ...]:
    """:data:`DEFAULT_SEARCH_PATH` with ``$HOME`` expanded now (skipped when HOME is unset); for root
    (``euid`` 0, default: the process's) only its absolute entries outside ``$HOME``."""
    root = (os.geteuid() if euid is None else euid) == 0
    home = os.environ.get("HOME")
    paths: list[Path] = []
    for path in DEFAULT_SEARCH_PATH:
        if root and (path.parts[0] == "$HOME" or not path.is_absolute()):
            continue
        if path.parts[0] == "$HOME":
            if home:
                paths.append(Path(home, *path.parts[1:]))
        else:
            paths.append(path)
    return tuple(paths)


def find_config(explicit: str | None, euid: int | None = None) -> Path:
    """The explicit path if given (it must exist), else the first file of the search path that exists
    (:func:`search_path` for ``euid``, default: the process's)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"configuration file {explicit} does not exist or is not a file")
        return path
    candidates = search_path(euid)
    for path in candidates:
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in candidates)
    raise ConfigError(f"no configuration file found (searched: {searched}); use --config")


EntryCheck = Callable[[EntryConfig], Sequence[ConfigError]]


def load_config(
    path: Path,
    entry_check: EntryCheck | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    strict_environment: bool = False,
) -> Config:
    """Read and parse ``path`` (see :func:`parse_config`). Blocking file I/O: the daemon calls it in a worker
    thread. As root, a file that another user could have written is refused (:mod:`pfxhttp.config.trust`)."""
    raw = read_config_bytes(path, os.geteuid())
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        error = ConfigError("the file is not valid UTF-8", location=Location(str(path), line, column))
        raise ConfigErrors([error]) from exc
    return parse_config(
        text,
        source=str(path),
        entry_check=entry_check,
        environ=environ,
        strict_environment=strict_environment,
    )


def parse_config(
    text: str,
    source: str = "<string>",
    entry_check: EntryCheck | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    strict_environment: bool = False,
) -> Config:
    """Parse configuration text. Raises :class:`ConfigErrors` listing every problem found.

    Pure but for the files the text names and whose content is part of the configuration: the secret files
    (``*_file`` keys), private keys, and the check that jwt_db_path's directory exists. They are read here, so
    that a reload reads them again; the daemon calls this in a worker thread.

    ``entry_check`` lets a later layer (the backend compiles payload templates and JSONPath fields) report its
    problems with the entries in the same pass, so ``pfxhttp check`` prints them together with the rest.
    ``environ``: the process environment, whose ``PFXHTTP_*`` variables override keys of the file; None
    (the default) applies none. A variable that names no key is a warning in :attr:`Config.warnings` (the
    daemon starts), or with ``strict_environment`` (``pfxhttp check``) an error.
    """
    root = compose(text, source)
    start = Location(source, 1, 1)
    if root is None or is_null(root):
        raise ConfigErrors([ConfigError("the configuration is empty", location=start)])
    problems = Problems(source)
    if not isinstance(root, MappingNode):
        problems.error(root, "", "the top level must be a mapping with the sections server, socket_maps, ...")
        problems.raise_if_any()
    applied: tuple[str, ...] = ()
    if environ is not None:
        assert isinstance(root, MappingNode)
        root, applied = apply_overrides(root, overrides_from(environ), problems, strict=strict_environment)
    items = mapping_items(root, "", problems) or []
    top = check_keys(items, "", TOP_KEYS, TOP_DEFERRED, problems)
    socket_maps = parse_section(top.get("socket_maps"), EntryKind.SOCKET_MAP, problems)
    policy_services = parse_section(top.get("policy_services"), EntryKind.POLICY_SERVICE, problems)
    server = top.get("server")
    if server is None:
        problems.errors.append(ConfigError("missing required section 'server'", location=start))
        server_config = ServerConfig()
    else:
        sections = {EntryKind.SOCKET_MAP: socket_maps, EntryKind.POLICY_SERVICE: policy_services}
        server_config = parse_server(server, sections, problems)
    if entry_check is not None:
        for section in (socket_maps, policy_services):
            for entry in section.entries.values():
                problems.errors.extend(entry_check(entry))
    problems.raise_if_any()
    return Config(
        server=server_config,
        socket_maps=MappingProxyType(socket_maps.entries),
        policy_services=MappingProxyType(policy_services.entries),
        source=source,
        warnings=problems.sorted_warnings(),
        overrides=applied,
    )
