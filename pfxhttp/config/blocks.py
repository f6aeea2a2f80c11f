"""Small nested mappings: ``worker_pool``, ``response_cache``, ``metrics``, ``cache`` and ``circuit_breaker``,
and the node-level duration and bounded-integer readers they are built from.

Each parser reports its problems at the offending key or value and returns None when the block is unusable,
so the caller leaves the feature off instead of inventing a value the file did not say.
"""

from __future__ import annotations

from yaml.nodes import Node, ScalarNode

from pfxhttp.config.model import (
    BasicAuth,
    CacheConfig,
    CircuitBreakerConfig,
    MetricsConfig,
    ResponseCacheConfig,
    WorkerPoolConfig,
)
from pfxhttp.config.secrets import read_secret
from pfxhttp.config.values import check_attribute_name, check_url_path, parse_basic_auth, parse_duration
from pfxhttp.config.yamlnodes import (
    Item,
    Problems,
    as_bool,
    as_int,
    as_scalar,
    as_str,
    describe,
    is_null,
    join,
    mapping_items,
    sequence_items,
    suggest,
)
from pfxhttp.errors import ConfigError

WORKER_POOL_KEYS = ("max_workers", "max_queue")
RESPONSE_CACHE_KEYS = ("enabled", "ttl")
CACHE_KEYS = ("ttl", "negative_ttl", "stale_if_error", "max_entries", "key_attributes")
CIRCUIT_BREAKER_KEYS = ("failures", "cooldown")
METRICS_KEYS = ("enabled", "address", "port", "path", "basic_auth", "basic_auth_file")

# Bounds that catch a typo (an extra zero or three) before it becomes an unbounded queue or cache: memory is
# the limit, and these are far above anything a mail server needs.
MAX_WORKERS = 65_536
MAX_QUEUE = 1_000_000
MAX_CACHE_ENTRIES = 10_000_000
MAX_BREAKER_FAILURES = 1_000_000
MAX_POOL_SIZE = 16384  # upstream's validation bound for the connection-pool sizes
MAX_HTTP_DURATION = 3600.0  # upstream bounds timeout and idle_connection_timeout to 1h
MAX_REPLY_SIZE = 1_000_000_000  # upstream's bound for socketmap_max_reply_size
# server.http_client.max_response_body_size: below 1 KiB even a small JSON answer is refused (and 256 meant as
# KiB is caught); 1 GiB parses to tens of GB, far past any sane memory limit.
MIN_RESPONSE_BODY_SIZE = 1024
MAX_RESPONSE_BODY_SIZE = 1 << 30
# server.workers: processes on the same listening sockets. Each holds its own HTTP connection pools and
# caches, so more than a few per CPU only multiplies backend connections; 64 catches a typo.
MAX_WORKER_PROCESSES = 64
# max_connections: each connection is a file descriptor; Linux's default fs.nr_open is 1048576.
MAX_CONNECTIONS = 1_048_576
DEFAULT_RESPONSE_CACHE_TTL = ResponseCacheConfig().ttl
_BOOL_TAG = "tag:yaml.org,2002:bool"


def block_keys(
    node: Node, path: str, supported: tuple[str, ...], problems: Problems
) -> dict[str, Item] | None:
    """The keys of a nested mapping; unknown keys are errors with the closest spelling."""
    items = mapping_items(node, path, problems)
    if items is None:
        return None
    keys: dict[str, Item] = {}
    for item in items:
        if item.key in supported:
            keys[item.key] = item
        else:
            problems.error(item.key_node, join(path, item.key), "unknown key", suggest(item.key, supported))
    return keys


def duration(node: Node, path: str, problems: Problems, *, positive: bool = False) -> float | None:
    """A duration in seconds (see :func:`parse_duration`); ``positive`` refuses 0 as well."""
    raw = as_scalar(node, path, problems)
    if raw is None:
        return None
    try:
        seconds = parse_duration(raw)
    except ConfigError as exc:
        problems.wrap(node, path, exc)
        return None
    if positive and seconds <= 0:
        problems.error(node, path, "must be greater than 0")
        return None
    return seconds


def bounded_int(node: Node, path: str, problems: Problems, low: int, high: int) -> int | None:
    value = as_int(node, path, problems)
    if value is not None and not low <= value <= high:
        problems.error(node, path, f"must be between {low} and {high}")
        return None
    return value


def required_keys(
    keys: dict[str, Item], names: tuple[str, ...], node: Node, path: str, problems: Problems
) -> bool:
    missing = [name for name in names if name not in keys or is_null(keys[name].value)]
    for name in missing:
        problems.error(node, path, f"missing required key '{name}'")
    return not missing


def parse_worker_pool(item: Item, path: str, problems: Problems) -> WorkerPoolConfig | None:
    """``worker_pool: {max_workers, max_queue}``; both keys are required (no guessed queue length)."""
    keys = block_keys(item.value, path, WORKER_POOL_KEYS, problems)
    if keys is None or not required_keys(keys, WORKER_POOL_KEYS, item.value, path, problems):
        return None
    workers = bounded_int(keys["max_workers"].value, join(path, "max_workers"), problems, 1, MAX_WORKERS)
    queue = bounded_int(keys["max_queue"].value, join(path, "max_queue"), problems, 0, MAX_QUEUE)
    if workers is None or queue is None:
        return None
    return WorkerPoolConfig(max_workers=workers, max_queue=queue)


def parse_response_cache(item: Item | None, path: str, problems: Problems) -> ResponseCacheConfig:
    """``server.response_cache: {enabled, ttl}``; ttl defaults to 1h and must be positive."""
    if item is None:
        return ResponseCacheConfig()
    keys = block_keys(item.value, path, RESPONSE_CACHE_KEYS, problems)
    if keys is None:
        return ResponseCacheConfig()
    enabled = (
        bool(as_bool(keys["enabled"].value, join(path, "enabled"), problems)) if "enabled" in keys else False
    )
    ttl = DEFAULT_RESPONSE_CACHE_TTL
    if "ttl" in keys and not is_null(keys["ttl"].value):
        ttl = duration(keys["ttl"].value, join(path, "ttl"), problems, positive=True) or ttl
    return ResponseCacheConfig(enabled=enabled, ttl=ttl)


def parse_metrics(item: Item | None, path: str, problems: Problems) -> MetricsConfig:
    """``server.metrics``: where Prometheus scrapes; each key absent or null keeps the model's default."""
    defaults = MetricsConfig()
    keys = block_keys(item.value, path, METRICS_KEYS, problems) if item is not None else None
    if not keys:
        return defaults

    def text(key: str) -> str | None:
        return as_str(keys[key].value, join(path, key), problems) if key in keys else None

    enabled = as_bool(keys["enabled"].value, join(path, "enabled"), problems) if "enabled" in keys else None
    address = text("address")
    if address == "":
        problems.error(keys["address"].value, join(path, "address"), "must not be empty")
    elif address and address.startswith("[") and address.endswith("]"):
        address = address[1:-1]  # an IPv6 address written as in a URL, as the listeners accept it
    port: int | None = None
    if "port" in keys and not is_null(keys["port"].value):
        port = bounded_int(keys["port"].value, join(path, "port"), problems, 1, 65535)
    url_path = text("path")
    if url_path is not None:
        try:
            check_url_path(url_path)
        except ConfigError as exc:
            problems.wrap(keys["path"].value, join(path, "path"), exc)
    basic_auth = _metrics_auth(keys, path, text("basic_auth"), problems)
    return MetricsConfig(
        enabled=bool(enabled),
        address=address or defaults.address,
        port=port or defaults.port,
        path=url_path or defaults.path,
        basic_auth=basic_auth,
    )


def _metrics_auth(keys: dict[str, Item], path: str, text: str | None, problems: Problems) -> BasicAuth | None:
    """``basic_auth: "user:password"`` or ``basic_auth_file``, the file that holds it; "" like null: none."""
    key = "basic_auth"
    file_item = keys.get("basic_auth_file")
    if file_item is not None and text:
        problems.error(
            file_item.key_node,
            join(path, "basic_auth_file"),
            "basic_auth and basic_auth_file exclude each other: give the credentials or the file that holds them",
        )
        return None
    if file_item is not None:
        key = "basic_auth_file"
        text = read_secret(file_item.value, join(path, key), problems)
    if not text:
        return None
    try:
        return parse_basic_auth(
            text, "basic_auth" if key == "basic_auth" else "the content of basic_auth_file"
        )
    except ConfigError as exc:
        problems.wrap(keys[key].value, join(path, key), exc)
        return None


def off_or_mapping(node: Node, path: str, problems: Problems) -> bool | None:
    """True when ``node`` is a mapping to parse; False for an explicit ``false`` (off); None after an error."""
    if isinstance(node, ScalarNode) and not is_null(node):
        if node.tag == _BOOL_TAG and as_bool(node, path, problems) is False:
            return False
        problems.error(node, path, f"expected a mapping, or false to turn it off here; got {describe(node)}")
        return None
    return True


def parse_cache(node: Node, path: str, policy: bool, problems: Problems) -> CacheConfig | bool | None:
    """An entry's ``cache`` block, ``False`` for ``cache: false``, None after an error.

    ``key_attributes`` names policy attributes, so it exists for policy services only: a socket map's cache
    key is always the lookup key.
    """
    shape = off_or_mapping(node, path, problems)
    if shape is not True:
        return shape
    keys = block_keys(node, path, CACHE_KEYS, problems)
    if keys is None or not required_keys(keys, ("ttl",), node, path, problems):
        return None
    errors_before = len(problems.errors)
    ttl = duration(keys["ttl"].value, join(path, "ttl"), problems, positive=True)
    seconds = {
        name: duration(keys[name].value, join(path, name), problems) or 0.0
        for name in ("negative_ttl", "stale_if_error")
        if name in keys
    }
    max_entries = CacheConfig(ttl=0.0).max_entries
    if "max_entries" in keys and not is_null(keys["max_entries"].value):
        max_entries = (
            bounded_int(keys["max_entries"].value, join(path, "max_entries"), problems, 1, MAX_CACHE_ENTRIES)
            or max_entries
        )
    attributes: tuple[str, ...] = ()
    if "key_attributes" in keys:
        if policy:
            attributes = _key_attributes(keys["key_attributes"].value, join(path, "key_attributes"), problems)
        else:
            problems.error(
                keys["key_attributes"].key_node,
                join(path, "key_attributes"),
                "only policy_services have key_attributes (a socket map's cache key is the lookup key)",
            )
    if ttl is None or len(problems.errors) > errors_before:
        return None
    return CacheConfig(
        ttl=ttl,
        negative_ttl=seconds.get("negative_ttl", 0.0),
        stale_if_error=seconds.get("stale_if_error", 0.0),
        max_entries=max_entries,
        key_attributes=attributes,
    )


def _key_attributes(node: Node, path: str, problems: Problems) -> tuple[str, ...]:
    if isinstance(node, ScalarNode) and not is_null(node):
        elements: list[tuple[str, Node]] = [(path, node)]  # one name: lifted to a list, as custom_headers
    else:
        nodes = sequence_items(node, path, problems) or []
        elements = [(f"{path}[{index}]", element) for index, element in enumerate(nodes)]
    names: list[str] = []
    for element_path, element in elements:
        name = as_str(element, element_path, problems)
        if name is None:
            if is_null(element):
                problems.error(element, element_path, f"expected a string, got {describe(element)}")
            continue
        try:
            check_attribute_name(name)
        except ConfigError as exc:
            problems.wrap(element, element_path, exc)
            continue
        if name in names:
            problems.error(element, element_path, f"duplicate attribute {name!r}")
            continue
        names.append(name)
    return tuple(names)


def parse_circuit_breaker(node: Node, path: str, problems: Problems) -> CircuitBreakerConfig | bool | None:
    """An entry's ``circuit_breaker: {failures, cooldown}`` (both required), ``False`` for ``false``."""
    shape = off_or_mapping(node, path, problems)
    if shape is not True:
        return shape
    keys = block_keys(node, path, CIRCUIT_BREAKER_KEYS, problems)
    if keys is None or not required_keys(keys, CIRCUIT_BREAKER_KEYS, node, path, problems):
        return None
    failures = bounded_int(keys["failures"].value, join(path, "failures"), problems, 1, MAX_BREAKER_FAILURES)
    cooldown = duration(keys["cooldown"].value, join(path, "cooldown"), problems, positive=True)
    if failures is None or cooldown is None:
        return None
    return CircuitBreakerConfig(failures=failures, cooldown=cooldown)
