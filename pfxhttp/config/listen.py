"""The ``server.listen`` section: where pfxhttp accepts Postfix connections.

Upstream's newer releases take a list of listeners; its first releases took one mapping without ``kind``.
Both load. Each listener is a socketmap, a policy-delegation or a tcp_table(5) endpoint on tcp, tcp6 or a unix
socket. A tcp_table request carries no map name, so such a listener names the ``socket_maps`` entry it serves,
as a policy_service listener names its ``policy_services`` entry.
"""

from __future__ import annotations

from yaml.nodes import MappingNode, Node

from pfxhttp.config.blocks import MAX_CONNECTIONS, bounded_int, parse_worker_pool
from pfxhttp.config.entries import DEFAULTS_KEY, Section, check_keys
from pfxhttp.config.model import EntryKind, ListenConfig, ListenKind, ListenType, WorkerPoolConfig
from pfxhttp.config.values import check_fd_name, check_map_name, parse_octal_mode
from pfxhttp.config.yamlnodes import (
    Item,
    Problems,
    as_int,
    as_str,
    is_null,
    join,
    mapping_items,
    sequence_items,
    suggest,
)
from pfxhttp.errors import ConfigError

LISTEN_KEYS = (
    "kind",
    "name",
    "type",
    "address",
    "port",
    "mode",
    "user",
    "group",
    "worker_pool",
    "systemd_socket_name",
    "max_connections",
)
LISTEN_DEFERRED: tuple[str, ...] = ()
LISTEN_KINDS_DEFERRED = ("dovecot_sasl",)


# The listener kinds that serve one named entry, and the section that entry must be in.
NAMED_KINDS = {
    ListenKind.POLICY_SERVICE: EntryKind.POLICY_SERVICE,
    ListenKind.TCP_TABLE: EntryKind.SOCKET_MAP,
}


def parse_listeners(
    item: Item, sections: dict[EntryKind, Section], problems: Problems, server_limit: int = MAX_CONNECTIONS
) -> tuple[ListenConfig, ...]:
    """All supported listeners; kinds upstream has and we do not are skipped with a warning. ``sections``:
    the parsed socket_maps and policy_services, whose entry names tcp_table and policy_service listeners use;
    ``server_limit``: server.max_connections, which a listener's own max_connections cannot usefully pass."""
    # Old releases had one listener as a mapping; newer ones a list.
    if isinstance(item.value, MappingNode):
        nodes: list[tuple[str, Node]] = [("server.listen", item.value)]
    else:
        found = sequence_items(item.value, "server.listen", problems)
        if found is None:
            return ()
        nodes = [(f"server.listen[{i}]", node) for i, node in enumerate(found)]
    if not nodes:
        problems.error(item.value, "server.listen", "at least one listener is required")
    listeners: list[ListenConfig] = []
    seen: dict[tuple[str, int | str], str] = {}
    for path, node in nodes:
        listener = _listener(node, path, sections, problems, server_limit)
        if listener is None:
            continue
        if listener.type is ListenType.UNIX:
            endpoint: tuple[str, int | str] = ("unix", listener.address)
        elif listener.port == 0:  # port 0 asks the kernel for a fresh port: never a clash
            listeners.append(listener)
            continue
        else:
            endpoint = (listener.address.lower(), listener.port or 0)
        if endpoint in seen:
            problems.error(node, path, f"listens on the same endpoint as {seen[endpoint]}")
            continue
        seen[endpoint] = path
        listeners.append(listener)
    return tuple(listeners)


def _listener(
    node: Node, path: str, sections: dict[EntryKind, Section], problems: Problems, server_limit: int
) -> ListenConfig | None:
    errors_before = len(problems.errors)
    items = mapping_items(node, path, problems)
    if items is None:
        return None
    by_key = {i.key: i for i in items}
    kind_item = by_key.get("kind")
    kind_text = as_str(kind_item.value, join(path, "kind"), problems) if kind_item else None
    if kind_text in LISTEN_KINDS_DEFERRED:
        problems.warn(
            node, path, f"listener kind '{kind_text}' is not supported by this version yet; skipped"
        )
        return None
    keys = check_keys(items, path, LISTEN_KEYS, LISTEN_DEFERRED, problems)
    ok = True
    kind = ListenKind.SOCKET_MAP
    if kind_item is not None and kind_text is not None:
        try:
            kind = ListenKind(kind_text)
        except ValueError:
            choices = [k.value for k in ListenKind] + list(LISTEN_KINDS_DEFERRED)
            problems.error(
                kind_item.value,
                join(path, "kind"),
                f"unknown listener kind {kind_text!r}",
                suggest(kind_text, choices),
            )
            ok = False

    def text(key: str) -> str | None:
        return as_str(keys[key].value, join(path, key), problems) if key in keys else None

    type_text = text("type")
    listen_type: ListenType | None = None
    if type_text is None:
        problems.error(node, path, "missing required key 'type' (tcp, tcp6 or unix)")
    else:
        try:
            listen_type = ListenType(type_text)
        except ValueError:
            problems.error(
                keys["type"].value,
                join(path, "type"),
                f"unknown listener type {type_text!r}",
                suggest(type_text, [t.value for t in ListenType]),
            )
    address = text("address")
    if not address:
        problems.error(node, path, "missing required key 'address'")
    elif listen_type is not None and listen_type is not ListenType.UNIX:
        # Upstream writes IPv6 addresses in brackets ("[::]"); the socket API wants them bare.
        if address.startswith("[") and address.endswith("]"):
            address = address[1:-1]
    elif "\x00" in address:
        problems.error(keys["address"].value, join(path, "address"), "a unix socket path cannot hold NUL")
    name = _listener_name(keys, kind, path, sections, problems, node)
    pool: WorkerPoolConfig | None = None
    if "worker_pool" in keys:
        pool = parse_worker_pool(keys["worker_pool"], join(path, "worker_pool"), problems)
    port, mode = _listener_port_mode(keys, listen_type, path, problems, node)
    max_connections = _listener_max_connections(keys.get("max_connections"), path, server_limit, problems)
    fd_name = text("systemd_socket_name")
    if fd_name is not None:
        try:
            check_fd_name(fd_name)
        except ConfigError as exc:
            problems.wrap(keys["systemd_socket_name"].value, join(path, "systemd_socket_name"), exc)
    unix_only = {"user": text("user"), "group": text("group")}
    if listen_type is not None and listen_type is not ListenType.UNIX:
        for key in ("mode", "user", "group"):
            if key in keys:
                problems.warn(keys[key].key_node, join(path, key), "only used by unix listeners; ignored")
        unix_only = {"user": None, "group": None}
    if not ok or listen_type is None or not address or name is None or len(problems.errors) > errors_before:
        return None
    return ListenConfig(
        kind=kind,
        name=name,
        type=listen_type,
        address=address,
        port=port,
        mode=mode,
        user=unix_only["user"],
        group=unix_only["group"],
        worker_pool=pool,
        systemd_socket_name=fd_name,
        max_connections=max_connections,
        location=problems.loc(node),
    )


def _listener_max_connections(
    item: Item | None, path: str, server_limit: int, problems: Problems
) -> int | None:
    """A listener's own connection limit (absent or null: only server.max_connections applies)."""
    if item is None or is_null(item.value):
        return None
    key_path = join(path, "max_connections")
    value = bounded_int(item.value, key_path, problems, 1, MAX_CONNECTIONS)
    if value is not None and value > server_limit:
        problems.warn(
            item.value, key_path, f"above server.max_connections ({server_limit}), which applies first"
        )
    return value


def _listener_name(
    keys: dict[str, Item],
    kind: ListenKind,
    path: str,
    sections: dict[EntryKind, Section],
    problems: Problems,
    node: Node,
) -> str | None:
    name_path = join(path, "name")
    name = as_str(keys["name"].value, name_path, problems) if "name" in keys else None
    section = NAMED_KINDS.get(kind)
    if not name:
        if section is not None:
            problems.error(node, path, f"a {kind.value} listener needs a 'name' from {section.value}")
            return None
        return ""  # socket_map: the map name comes with every request
    value_node = keys["name"].value
    try:
        check_map_name(name, "listener name")
    except ConfigError as exc:
        problems.wrap(value_node, name_path, exc)
        return None
    if name == DEFAULTS_KEY:
        problems.error(value_node, name_path, f"'{DEFAULTS_KEY}' is reserved and cannot name a listener")
        return None
    if section is not None and name not in sections[section].names:
        problems.error(
            value_node,
            name_path,
            f"no {section.value} entry named {name!r}",
            suggest(name, sorted(sections[section].names)),
        )
        return None
    return name


def _listener_port_mode(
    keys: dict[str, Item], listen_type: ListenType | None, path: str, problems: Problems, node: Node
) -> tuple[int | None, int | None]:
    port: int | None = None
    mode: int | None = None
    if listen_type is ListenType.UNIX:
        if "port" in keys:
            problems.warn(
                keys["port"].key_node, join(path, "port"), "only used by tcp/tcp6 listeners; ignored"
            )
        if "mode" in keys:
            mode_node = keys["mode"].value
            mode_text = as_str(mode_node, join(path, "mode"), problems)
            if mode_text is not None:
                try:
                    mode = parse_octal_mode(mode_text)
                except ConfigError as exc:
                    problems.wrap(mode_node, join(path, "mode"), exc)
    elif listen_type is not None:
        if "port" not in keys:
            problems.error(node, path, f"a {listen_type.value} listener needs a 'port'")
        else:
            port = as_int(keys["port"].value, join(path, "port"), problems)
            if port is not None and not 0 <= port <= 65535:
                problems.error(keys["port"].value, join(path, "port"), f"port {port} is not in 0..65535")
                port = None
    return port, mode
