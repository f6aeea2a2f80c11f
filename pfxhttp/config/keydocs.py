"""What each key of pfxhttp.yml means and which values it takes, as text and JSON Schema fragments.

The texts follow the model's field comments and pfxhttp.yml(5); defaults are read from the model's own
dataclasses, so the schema cannot drift from what the loader fills in. :mod:`pfxhttp.config.keytree` joins
these to the loader's key tables; the value schemas are built with :mod:`pfxhttp.config.jsontypes`. The
backend authentication blocks are described in :mod:`pfxhttp.config.authdocs` and merged in here.
"""

from __future__ import annotations

from typing import Any

from pfxhttp.config import blocks
from pfxhttp.config.authdocs import AUTH_BLOCK_DOCS, AUTH_DOCS, AUTH_ENTRY_RULES
from pfxhttp.config.jsontypes import (
    ATTRIBUTE,
    BASIC_AUTH,
    ENTRY_NAME,
    ERROR_ACTION,
    FD_NAME,
    HEADER,
    OCTAL_MODE,
    TARGET,
    URL_PATH,
    Doc,
    any_case,
    boolean,
    duration,
    integer,
    one_or_list,
    status_codes,
    string,
)
from pfxhttp.config.model import (
    DEFAULT_POLICY_ERROR_ACTION,
    DEFAULT_SOCKETMAP_MAX_REPLY_SIZE,
    CacheConfig,
    EntryConfig,
    EntryKind,
    HttpClientConfig,
    HttpMethod,
    ListenKind,
    ListenType,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    OnError,
    ResponseCacheConfig,
    ServerConfig,
    TlsConfig,
)
from pfxhttp.config.values import ACCOUNT_PATTERN, MAX_FD_NAME

IGNORED_DOC = (
    "Upstream pfxhttp key that this version does not implement yet: accepted, ignored, and warned about."
)
ACCOUNT = {"anyOf": [string(ACCOUNT_PATTERN), {"type": "integer", "minimum": 0}]}
_HTTP = HttpClientConfig()
_LOG = LoggingConfig()
_TLS = TlsConfig()
_RESPONSE_CACHE = ResponseCacheConfig()
_METRICS = MetricsConfig()
_CACHE = CacheConfig(ttl=1.0)
_ENTRY = EntryConfig(name="", kind=EntryKind.SOCKET_MAP, target="")
_POOL = integer(0, blocks.MAX_POOL_SIZE)
_SERVER = ServerConfig()

BLOCK_DOCS: dict[str, Doc] = {
    "": Doc("pfxhttp configuration (the format of upstream pfxhttp).", {"required": ["server"]}, False),
    "server": Doc("Listeners, logging, the HTTP client and server-wide limits.", {"required": ["listen"]}),
    "listen": Doc(
        "Where Postfix connects: a list of listeners (one mapping, the format of the first upstream releases, "
        "means one socket_map listener).",
        {
            "required": ["type", "address"],
            "allOf": [
                {
                    "if": {
                        "type": "object",
                        "required": ["kind"],
                        "properties": {"kind": {"enum": ["policy_service", "tcp_table"]}},
                    },
                    "then": {"required": ["name"]},
                },
                {
                    "if": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"enum": ["tcp", "tcp6"]}},
                    },
                    "then": {"required": ["port"]},
                },
            ],
        },
    ),
    "logging": Doc("Log output."),
    "http_client": Doc("The one HTTP client shared by every backend request."),
    "tls": Doc(
        "TLS towards the HTTP backends (https:// targets).",
        {"dependentRequired": {"cert": ["key"], "key": ["cert"]}},
    ),
    "response_cache": Doc(
        "Serve the last good answer for the same entry and key when the backend fails (bounded; off by default)."
    ),
    "worker_pool": Doc(
        "A limit on backend requests in flight, never on connections; requests beyond max_workers wait in a "
        "queue of max_queue, more are answered at once (TEMP, 4xx or the policy error action).",
        {"required": list(blocks.WORKER_POOL_KEYS)},
        nullable=False,
    ),
    "metrics": Doc(
        "Prometheus metrics over HTTP (off unless enabled); labels only ever come from configured names."
    ),
    "socket_maps": Doc(
        "Socket maps: Postfix asks 'NAME KEY'; the entry NAME is called over HTTP. An entry named 'defaults' "
        "is merged into every other entry."
    ),
    "policy_services": Doc(
        "Policy services: the entry a policy_service listener names answers Postfix's policy requests. An "
        "entry named 'defaults' is merged into every other entry."
    ),
    "cache": Doc(
        "Per-entry answer cache (off unless given; false turns off one from 'defaults').",
        {"required": ["ttl"]},
        nullable=False,
    ),
    "circuit_breaker": Doc(
        "After 'failures' backend failures in a row, answer TEMP / the error action at once for 'cooldown', then "
        "let one request probe (false turns off one from 'defaults').",
        {"required": list(blocks.CIRCUIT_BREAKER_KEYS)},
        nullable=False,
    ),
    **AUTH_BLOCK_DOCS,
}

# Checks between the keys of one entry (entries._cross_check and _parse_fields): one of value_field and
# value_template, one spelling of a key, one source of the Authorization header, no body with GET.
ENTRY_RULES: dict[str, Any] = {
    "allOf": [
        {"not": {"type": "object", "required": ["value_field", "value_template"]}},
        *AUTH_ENTRY_RULES,
        {
            "if": {
                "type": "object",
                "required": ["method"],
                "properties": {"method": {"pattern": "^[Gg][Ee][Tt]$"}},
            },
            "then": {"not": {"type": "object", "required": ["payload"]}},
        },
    ]
}
ENTRY_NAME_SCHEMA: dict[str, Any] = {"pattern": ENTRY_NAME}

DOCS: dict[str, dict[str, Doc]] = {
    "server": {
        "socketmap_max_reply_size": Doc(
            "Largest socketmap reply (OK included) sent to Postfix; 0 or less means the default, Postfix's own "
            "limit.",
            integer(-(2**31), blocks.MAX_REPLY_SIZE, DEFAULT_SOCKETMAP_MAX_REPLY_SIZE),
        ),
        "run_as_user": Doc(
            "Drop privileges to this user (name or numeric uid) after binding the listeners.", ACCOUNT
        ),
        "run_as_group": Doc(
            "... and this group (name or numeric gid; default: the user's primary group). Only together with "
            "run_as_user: a group alone would keep root's uid.",
            ACCOUNT,
        ),
        "jwt_db_path": Doc(
            "SQLite file keeping the backend tokens of jwt_auth and backend_oidc_auth across restarts, shared "
            "by the worker processes; its directory must exist and be writable by the daemon's user (or root) "
            "alone. Absent: tokens in memory only.",
            string(minLength=1),
        ),
        "workers": Doc(
            "Processes serving the same listening sockets (pre-fork); reload and stop act on all of them.",
            integer(1, blocks.MAX_WORKER_PROCESSES, _SERVER.workers),
        ),
        "max_connections": Doc(
            "Open Postfix connections per process, all listeners together. At the limit a new connection closes "
            "the one that has waited on its client the longest (idle, or stalled inside a request or a reply); "
            "accepting pauses only while every connection is being answered. Capped below RLIMIT_NOFILE.",
            integer(1, blocks.MAX_CONNECTIONS, _SERVER.max_connections),
        ),
    },
    "listen": {
        "kind": Doc(
            "socket_map (default), policy_service or tcp_table (Postfix tcp_table(5)). Upstream's dovecot_sasl "
            "listeners are skipped with a warning.",
            {"enum": [k.value for k in ListenKind], "default": ListenKind.SOCKET_MAP.value},
        ),
        "name": Doc(
            "socket_map: optional (the map name comes with every request); policy_service: the policy_services "
            "entry served; tcp_table: the socket_maps entry served. No blanks, no ':'; 'defaults' is reserved.",
            string(ENTRY_NAME),
        ),
        "type": Doc("tcp, tcp6 (IPv6 only) or unix.", {"enum": [t.value for t in ListenType]}, False),
        "address": Doc(
            "tcp/tcp6: the host or IP to bind (IPv6 with or without brackets); unix: the socket path.",
            string(minLength=1),
            False,
        ),
        "port": Doc("tcp/tcp6 only, required: 0..65535 (0: any free port).", integer(0, 65535)),
        "mode": Doc(
            'unix only: permissions of the socket, always octal ("0660").',
            {"anyOf": [string(OCTAL_MODE), {"type": "integer", "minimum": 0}]},
        ),
        "user": Doc("unix only: owner of the socket after bind (name or numeric id).", ACCOUNT),
        "group": Doc("unix only: group of the socket after bind (name or numeric id).", ACCOUNT),
        "systemd_socket_name": Doc(
            "systemd socket activation: take the inherited socket of this FileDescriptorName= ($LISTEN_FDNAMES) "
            "instead of binding; type/address/port still describe it and are used when not socket-activated. "
            f"1 to {MAX_FD_NAME} printable ASCII characters without ':'.",
            string(FD_NAME),
        ),
        "max_connections": Doc(
            "This listener's own limit on open connections, inside server.max_connections (absent: only that "
            "one applies); at the limit a new connection closes this listener's longest-waiting one.",
            integer(1, blocks.MAX_CONNECTIONS),
        ),
    },
    "logging": {
        "json": Doc("true: one JSON object per log line.", boolean(_LOG.json)),
        "level": Doc(
            "none, error, info or debug (any letter case).",
            any_case([lv.value for lv in LogLevel], _LOG.level.value),
        ),
        "use_systemd": Doc("true: no timestamps (journald adds its own).", boolean(_LOG.use_systemd)),
    },
    "http_client": {
        "timeout": Doc(
            "One total deadline per backend request (0 means the default); at most 1h.",
            duration(_HTTP.timeout, maximum=blocks.MAX_HTTP_DURATION),
        ),
        "max_connections_per_host": Doc(
            "Connections open at once to one backend origin; 0 = no limit.",
            {**_POOL, "default": _HTTP.max_connections_per_host},
        ),
        "max_idle_connections": Doc(
            "Pooled keep-alive connections in total; 0 = no limit.",
            {**_POOL, "default": _HTTP.max_idle_connections},
        ),
        "max_idle_connections_per_host": Doc(
            "Pooled keep-alive connections per origin; 0 = no limit.",
            {**_POOL, "default": _HTTP.max_idle_connections_per_host},
        ),
        "idle_connection_timeout": Doc(
            "Seconds a pooled keep-alive connection may stay idle; 0 = never closed; at most 1h.",
            duration(_HTTP.idle_connection_timeout, maximum=blocks.MAX_HTTP_DURATION),
        ),
        "max_response_body_size": Doc(
            "Bytes of one backend response body, as sent and inflated; a larger body is a TEMP error. A JSON "
            "body takes up to about 40 times its size in memory once parsed: raise MemoryMax= with it.",
            integer(
                blocks.MIN_RESPONSE_BODY_SIZE, blocks.MAX_RESPONSE_BODY_SIZE, _HTTP.max_response_body_size
            ),
        ),
    },
    "tls": {
        "enabled": Doc("Apply the settings below to https targets.", boolean(_TLS.enabled)),
        "skip_verify": Doc("Do NOT verify backend certificates (testing only).", boolean(_TLS.skip_verify)),
        "http_client_skip_verify": Doc("Older spelling of skip_verify; either sets it.", boolean(False)),
        "root_ca": Doc("A CA file or directory to trust instead of the system store.", string()),
        "cert": Doc("Client certificate for mutual TLS (needs key).", string()),
        "key": Doc("The client certificate's key (needs cert).", string()),
    },
    "response_cache": {
        "enabled": Doc(
            "true: remember the last good answer of every lookup.", boolean(_RESPONSE_CACHE.enabled)
        ),
        "ttl": Doc(
            "How old a remembered answer may be and still stand in for a failing backend (> 0).",
            duration(_RESPONSE_CACHE.ttl, positive=True),
        ),
    },
    "worker_pool": {
        "max_workers": Doc("Backend requests at once.", integer(1, blocks.MAX_WORKERS), False),
        "max_queue": Doc(
            "Requests waiting for a worker; beyond: TEMP / the policy error action at once.",
            integer(0, blocks.MAX_QUEUE),
            False,
        ),
    },
    "metrics": {
        "enabled": Doc("true: serve Prometheus metrics.", boolean(_METRICS.enabled)),
        "address": Doc(
            "The address to bind the metrics HTTP server to.", string(minLength=1, default=_METRICS.address)
        ),
        "port": Doc("The metrics HTTP server's port: 1..65535.", integer(1, 65535, _METRICS.port)),
        "path": Doc(
            "The HTTP path the metrics are served at; starts with '/'.",
            string(URL_PATH, default=_METRICS.path),
        ),
        "basic_auth": Doc(
            '"user:password" a scrape must send (HTTP Basic authentication).', string(BASIC_AUTH)
        ),
        "basic_auth_file": Doc(
            'Instead of basic_auth: a file holding its "user:password" (one trailing newline stripped).',
            string(),
        ),
    },
    "entry": {
        "target": Doc(
            "Required (here or in 'defaults'): the http:// or https:// URL. Template expressions may follow the "
            "host, in the path or query; each is percent-encoded as one path segment. A path segment they "
            "leave empty, '.' or '..' is never sent: the lookup answers NOTFOUND / DUNNO.",
            string(TARGET),
        ),
        "method": Doc(
            "GET, POST (default) or PUT, any letter case; GET sends no body.",
            any_case([m.value for m in HttpMethod], _ENTRY.method.value),
        ),
        "query": Doc(
            "URL query parameter name -> template, percent-encoded and appended to the target.",
            {
                "type": "object",
                "propertyNames": {"minLength": 1},
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
        ),
        "custom_headers": Doc('"Name: value" strings sent with every request.', one_or_list(string(HEADER))),
        "payload": Doc(
            "The request body, a template (JSON-safe); {{ .Key }} is the lookup key or the policy attributes. "
            "Absent: a default JSON body.",
            string(),
        ),
        "status_code": Doc(
            "The HTTP status, or list of statuses, that mean success.", status_codes(200, allow_empty=False)
        ),
        "not_found_status": Doc(
            "The status(es) answered NOTFOUND / DUNNO ([] = none); must not overlap status_code.",
            status_codes(404, allow_empty=True),
        ),
        "value_field": Doc(
            "Where the answer is in the JSON response: a dotted path or a JSONPath expression.", string()
        ),
        "value_template": Doc(
            "Instead of value_field: a Jinja2 template over response, status, key, attrs, name; '' = not found.",
            string(),
        ),
        "error_field": Doc("Where an error indication is in the JSON response.", string()),
        "no_error_value": Doc(
            "The error_field value that means no error (compared as text).",
            {"type": ["string", "number", "boolean"]},
        ),
        "http_auth_basic": Doc(
            "\"user:password\" -> Authorization: Basic (split at the first ':').", string(BASIC_AUTH)
        ),
        "http_auth_basic_file": Doc(
            'Instead of http_auth_basic: a file holding its "user:password" (one trailing newline stripped).',
            string(),
        ),
        "http_request_compression": Doc(
            "true: gzip the request body.", boolean(_ENTRY.http_request_compression)
        ),
        "http_response_compression": Doc(
            "true: ask for gzip responses (Accept-Encoding) and inflate them.",
            boolean(_ENTRY.http_response_compression),
        ),
        "error_action": Doc(
            "Policy services only: the answer when the backend fails. The first word must be DEFER, "
            "DEFER_IF_PERMIT, DEFER_IF_REJECT, a 4NN code or DUNNO: a backend fault never accepts, bounces or "
            "loses mail.",
            string(ERROR_ACTION, default=DEFAULT_POLICY_ERROR_ACTION),
        ),
        "on_error": Doc(
            "Policy services only: reply (answer error_action) or close (no answer: Postfix applies "
            "smtpd_policy_service_default_action).",
            any_case([o.value for o in OnError], _ENTRY.on_error.value),
        ),
    },
    "cache": {
        "ttl": Doc(
            "Fresh positive answers served without a backend call (> 0).", duration(positive=True), False
        ),
        "negative_ttl": Doc("Fresh NOTFOUND / DUNNO answers (0: not cached).", duration(_CACHE.negative_ttl)),
        "stale_if_error": Doc(
            "How long past ttl an answer may be served while the backend fails.",
            duration(_CACHE.stale_if_error),
        ),
        "max_entries": Doc("LRU bound.", integer(1, blocks.MAX_CACHE_ENTRIES, _CACHE.max_entries)),
        "key_attributes": Doc(
            "Policy services only: the attributes the cache key is built from.",
            {**one_or_list(string(ATTRIBUTE)), "uniqueItems": True},
        ),
    },
    **AUTH_DOCS,
    "circuit_breaker": {
        "failures": Doc(
            "Consecutive backend failures that open the circuit.",
            integer(1, blocks.MAX_BREAKER_FAILURES),
            False,
        ),
        "cooldown": Doc(
            "Seconds to answer TEMP / the error action at once before a probe request (> 0).",
            duration(positive=True),
            False,
        ),
    },
}
