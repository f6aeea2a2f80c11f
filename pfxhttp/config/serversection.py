"""The ``server`` section of the YAML file: its key tables and the readers of its keys and blocks (listen,
logging, http_client, tls, metrics, worker_pool, run_as_*, jwt_db_path, workers).

Split from :mod:`pfxhttp.config.loader`, which reads the file and its top level; the key tables here are
also what :mod:`pfxhttp.config.keytree` documents and the JSON Schema is built from.
"""

from __future__ import annotations

from pfxhttp.config.blocks import (
    MAX_CONNECTIONS,
    MAX_HTTP_DURATION,
    MAX_POOL_SIZE,
    MAX_REPLY_SIZE,
    MAX_RESPONSE_BODY_SIZE,
    MAX_WORKER_PROCESSES,
    MIN_RESPONSE_BODY_SIZE,
    bounded_int,
    duration,
    parse_metrics,
    parse_response_cache,
    parse_worker_pool,
)
from pfxhttp.config.entries import Section, check_keys
from pfxhttp.config.listen import parse_listeners
from pfxhttp.config.model import (
    DEFAULT_SOCKETMAP_MAX_REPLY_SIZE,
    EntryKind,
    HttpClientConfig,
    ListenConfig,
    ListenType,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    ServerConfig,
    TlsConfig,
)
from pfxhttp.config.secrets import check_db_path
from pfxhttp.config.values import check_account
from pfxhttp.config.yamlnodes import (
    Item,
    Problems,
    as_bool,
    as_int,
    as_str,
    is_null,
    join,
    mapping_items,
    suggest,
)
from pfxhttp.errors import ConfigError

SERVER_KEYS = (
    "listen",
    "logging",
    "http_client",
    "tls",
    "socketmap_max_reply_size",
    "response_cache",
    "worker_pool",
    "run_as_user",
    "run_as_group",
    "metrics",
    "jwt_db_path",
    "workers",
    "max_connections",
)
SERVER_DEFERRED = (
    "chroot",
    "observability",
)
LOGGING_KEYS = ("json", "level", "use_systemd")
HTTP_CLIENT_KEYS = (
    "timeout",
    "max_connections_per_host",
    "max_idle_connections",
    "max_idle_connections_per_host",
    "idle_connection_timeout",
    "max_response_body_size",
)
HTTP_CLIENT_DEFERRED = ("proxy",)
# skip_verify is today's spelling; http_client_skip_verify the older one. Either sets it.
TLS_KEYS = ("enabled", "skip_verify", "http_client_skip_verify", "root_ca", "cert", "key")


def parse_server(item: Item, sections: dict[EntryKind, Section], problems: Problems) -> ServerConfig:
    """The ``server`` section: its listeners (checked against the entries of ``sections``) and its blocks."""
    items = mapping_items(item.value, "server", problems)
    if items is None:
        return ServerConfig()
    keys = check_keys(items, "server", SERVER_KEYS, SERVER_DEFERRED, problems)
    max_connections = _max_connections(keys.get("max_connections"), problems)
    listen = keys.get("listen")
    if listen is None:
        problems.error(item.key_node, "server", "missing required key 'listen'")
        listeners: tuple[ListenConfig, ...] = ()
    else:
        listeners = parse_listeners(listen, sections, problems, max_connections)
    reply_size = DEFAULT_SOCKETMAP_MAX_REPLY_SIZE
    if "socketmap_max_reply_size" in keys:
        node = keys["socketmap_max_reply_size"].value
        size = as_int(node, "server.socketmap_max_reply_size", problems)
        if size is not None and size > MAX_REPLY_SIZE:
            problems.error(node, "server.socketmap_max_reply_size", f"must not exceed {MAX_REPLY_SIZE}")
        elif size is not None and size > 0:  # <= 0 means the default, as upstream
            reply_size = size
    metrics = parse_metrics(keys.get("metrics"), "server.metrics", problems)
    reported = len(problems.errors)
    run_as_user = _account(keys.get("run_as_user"), "server.run_as_user", problems)
    user_invalid = len(problems.errors) > reported  # already reported: no second error about it
    run_as_group = _account(keys.get("run_as_group"), "server.run_as_group", problems)
    if run_as_group is not None and run_as_user is None and not user_invalid:
        # A group alone would leave uid 0, and with it every capability: that is not a privilege drop.
        group_item = keys["run_as_group"]
        problems.error(
            group_item.key_node,
            "server.run_as_group",
            "run_as_group needs run_as_user: a group alone keeps root's uid and capabilities",
        )
    _check_metrics_port(metrics, listeners, keys.get("metrics"), problems)
    return ServerConfig(
        listen=listeners,
        logging=_logging(keys.get("logging"), problems),
        http_client=_http_client(keys.get("http_client"), problems),
        tls=_tls(keys.get("tls"), problems),
        socketmap_max_reply_size=reply_size,
        response_cache=parse_response_cache(keys.get("response_cache"), "server.response_cache", problems),
        worker_pool=(
            parse_worker_pool(keys["worker_pool"], "server.worker_pool", problems)
            if "worker_pool" in keys
            else None
        ),
        run_as_user=run_as_user,
        run_as_group=run_as_group,
        metrics=metrics,
        jwt_db_path=_db_path(keys.get("jwt_db_path"), problems),
        workers=_workers(keys.get("workers"), metrics, problems),
        max_connections=max_connections,
    )


def _max_connections(item: Item | None, problems: Problems) -> int:
    """``server.max_connections``: open Postfix connections of one process (every listener together)."""
    default = ServerConfig().max_connections
    if item is None or is_null(item.value):
        return default
    value = bounded_int(item.value, "server.max_connections", problems, 1, MAX_CONNECTIONS)
    return default if value is None else value


def _db_path(item: Item | None, problems: Problems) -> str | None:
    """``jwt_db_path``: the SQLite token store; its directory must exist now (the daemon creates the file)."""
    text = as_str(item.value, "server.jwt_db_path", problems) if item is not None else None
    if not text:  # null or "": tokens in memory only
        return None
    try:
        return check_db_path(text)
    except ConfigError as exc:
        assert item is not None
        problems.wrap(item.value, "server.jwt_db_path", exc)
        return None


def _workers(item: Item | None, metrics: MetricsConfig, problems: Problems) -> int:
    default = ServerConfig().workers
    if item is None or is_null(item.value):
        return default
    count = bounded_int(item.value, "server.workers", problems, 1, MAX_WORKER_PROCESSES)
    if count is not None and count > 1 and metrics.enabled:
        # Each worker would count only its own requests, and all would bind the one metrics port.
        problems.error(item.value, "server.workers", "workers > 1 cannot be combined with server.metrics")
        return default
    return default if count is None else count


def _account(item: Item | None, path: str, problems: Problems) -> str | None:
    """``run_as_user`` / ``run_as_group``: kept as written; resolving the name is I/O for the daemon."""
    text = as_str(item.value, path, problems) if item is not None else None
    if not text:  # null or "" means not set, as upstream's empty string
        return None
    try:
        return check_account(text, path.rpartition(".")[2])
    except ConfigError as exc:
        assert item is not None
        problems.wrap(item.value, path, exc)
        return None


def _check_metrics_port(
    metrics: MetricsConfig, listeners: tuple[ListenConfig, ...], item: Item | None, problems: Problems
) -> None:
    """The metrics server binds after the listeners: the same address and port would fail at start."""
    if item is None or not metrics.enabled:
        return
    for listener in listeners:
        same = (listener.address.lower(), listener.port) == (metrics.address.lower(), metrics.port)
        if listener.type is not ListenType.UNIX and same:
            problems.error(
                item.key_node,
                "server.metrics",
                f"listens on {metrics.address}:{metrics.port}, the endpoint of the listener {listener.describe()}",
            )


def _logging(item: Item | None, problems: Problems) -> LoggingConfig:
    if item is None:
        return LoggingConfig()
    keys = check_keys(
        mapping_items(item.value, "server.logging", problems) or [],
        "server.logging",
        LOGGING_KEYS,
        (),
        problems,
    )
    flags = {
        k: as_bool(keys[k].value, f"server.logging.{k}", problems)
        for k in ("json", "use_systemd")
        if k in keys
    }
    level = LogLevel.INFO
    if "level" in keys:
        text = as_str(keys["level"].value, "server.logging.level", problems)
        if text is not None:
            try:
                level = LogLevel(text.lower())
            except ValueError:
                problems.error(
                    keys["level"].value,
                    "server.logging.level",
                    f"unknown log level {text!r}",
                    suggest(text.lower(), [lv.value for lv in LogLevel]),
                )
    return LoggingConfig(
        json=bool(flags.get("json")), level=level, use_systemd=bool(flags.get("use_systemd"))
    )


def _http_client(item: Item | None, problems: Problems) -> HttpClientConfig:
    if item is None:
        return HttpClientConfig()
    path = "server.http_client"
    keys = check_keys(
        mapping_items(item.value, path, problems) or [],
        path,
        HTTP_CLIENT_KEYS,
        HTTP_CLIENT_DEFERRED,
        problems,
    )
    defaults = HttpClientConfig()
    seconds: dict[str, float] = {
        "timeout": defaults.timeout,
        "idle_connection_timeout": defaults.idle_connection_timeout,
    }
    counts: dict[str, int] = {
        "max_connections_per_host": defaults.max_connections_per_host,
        "max_idle_connections": defaults.max_idle_connections,
        "max_idle_connections_per_host": defaults.max_idle_connections_per_host,
        "max_response_body_size": defaults.max_response_body_size,
    }
    for key, entry in keys.items():
        key_path = join(path, key)
        if key == "max_response_body_size":
            # Not upstream's: no "0 = no limit" as for the pool sizes, since an unbounded body is what it guards.
            size = bounded_int(
                entry.value, key_path, problems, MIN_RESPONSE_BODY_SIZE, MAX_RESPONSE_BODY_SIZE
            )
            if size is not None:
                counts[key] = size
        elif key in seconds:
            seconds_value = duration(entry.value, key_path, problems)
            if seconds_value is not None and seconds_value > MAX_HTTP_DURATION:
                problems.error(entry.value, key_path, "must not exceed 1h")
            elif seconds_value is not None and not (key == "timeout" and seconds_value == 0):  # 0 = not set
                seconds[key] = seconds_value
        else:
            count = as_int(entry.value, key_path, problems)
            if count is not None and not 0 <= count <= MAX_POOL_SIZE:
                problems.error(entry.value, key_path, f"must be between 0 (no limit) and {MAX_POOL_SIZE}")
            elif count is not None:
                counts[key] = count
    return HttpClientConfig(
        timeout=seconds["timeout"],
        idle_connection_timeout=seconds["idle_connection_timeout"],
        max_connections_per_host=counts["max_connections_per_host"],
        max_idle_connections=counts["max_idle_connections"],
        max_idle_connections_per_host=counts["max_idle_connections_per_host"],
        max_response_body_size=counts["max_response_body_size"],
    )


def _tls(item: Item | None, problems: Problems) -> TlsConfig:
    if item is None:
        return TlsConfig()
    path = "server.tls"
    keys = check_keys(mapping_items(item.value, path, problems) or [], path, TLS_KEYS, (), problems)
    flags = {
        k: bool(as_bool(keys[k].value, join(path, k), problems))
        for k in keys
        if k in ("enabled", "skip_verify", "http_client_skip_verify")
    }
    files = {
        k: as_str(keys[k].value, join(path, k), problems) or None
        for k in ("root_ca", "cert", "key")
        if k in keys
    }
    cert, key = files.get("cert"), files.get("key")
    if (cert is None) != (key is None):
        present, missing = ("cert", "key") if cert else ("key", "cert")
        problems.error(
            keys[present].key_node,
            join(path, present),
            f"'{present}' needs '{missing}' too (a client certificate and its key)",
        )
    return TlsConfig(
        enabled=flags.get("enabled", False),
        skip_verify=flags.get("skip_verify", False) or flags.get("http_client_skip_verify", False),
        root_ca=files.get("root_ca"),
        cert=cert,
        key=key,
    )
