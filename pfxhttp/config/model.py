"""The typed, frozen configuration model that the YAML loader produces.

Pure data: no I/O and nothing derived at run time. Field names follow the pfxhttp YAML keys so that the
manual, the loader and the code speak one vocabulary. Each entry keeps the YAML location of its keys so that
later compile steps (payload templates, JSONPath) can report errors as ``file:line:col`` with the key path.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from pfxhttp.errors import Location

DEFAULT_SOCKETMAP_MAX_REPLY_SIZE = 100_000
DEFAULT_HTTP_TIMEOUT = 10.0
# The response body cap (server.http_client.max_response_body_size). A JSON body parses to up to ~40 bytes of
# Python objects per byte (orjson on CPython 3.11, ``[{}]`` repeated). Peak RSS of a daemon that idles at
# 37 MiB, for one such body (bench/body_rss.py): 42 MiB at 128 KiB, 47 MiB at 256 KiB, 77 MiB at 1 MiB and
# 675 MiB at the former fixed 16 MiB. systemd/pfxhttp.service sets MemoryMax=50M for a daemon of ~40 MB
# (~45 MB with jwt_auth or backend_oidc_auth): 128 KiB fits that, and still holds a JSON answer carrying a
# socketmap value at Postfix's default reply limit (100000 bytes).
DEFAULT_MAX_RESPONSE_BODY_SIZE = 128 * 1024
# server.max_connections: Postfix's default_process_limit is 100 processes per service. A busy MTA runs smtpd
# on 25, 587 and 465 plus cleanup, trivial-rewrite and a delivery agent: about 600 processes that may each hold
# one connection to a socketmap endpoint (Postfix shares one per endpoint and process) and 300 smtpd holding
# one per policy service. 1024 covers that with every process busy; at about 7 KB of memory per connection it
# also fits the 50 MB the shipped systemd unit allows. Beyond the limit the longest-waiting connection is
# closed (pfxhttp.server.registry), so even a larger Postfix only reconnects more often.
DEFAULT_MAX_CONNECTIONS = 1024


class ListenKind(enum.Enum):
    SOCKET_MAP = "socket_map"
    POLICY_SERVICE = "policy_service"
    TCP_TABLE = (
        "tcp_table"  # Postfix tcp:host:port (tcp_table(5)); the listener's name selects the socket map
    )


class HttpMethod(enum.Enum):
    GET = "GET"
    POST = "POST"
    PUT = "PUT"


class OnError(enum.Enum):
    """What a policy service answers when its backend fails."""

    REPLY = "reply"  # answer error_action
    CLOSE = "close"  # close without replying: Postfix applies smtpd_policy_service_default_action


class ListenType(enum.Enum):
    TCP = "tcp"
    TCP6 = "tcp6"
    UNIX = "unix"


class LogLevel(enum.Enum):
    NONE = "none"
    ERROR = "error"
    INFO = "info"
    DEBUG = "debug"


class EntryKind(enum.Enum):
    """Which section an entry came from; decides payload defaults and reply mapping."""

    SOCKET_MAP = "socket_maps"
    POLICY_SERVICE = "policy_services"


@dataclass(frozen=True, slots=True)
class WorkerPoolConfig:
    """Limit on backend requests in flight (never on connections); requests beyond wait in a bounded queue."""

    max_workers: int
    max_queue: int  # waiting requests beyond max_workers; more are answered TEMP / the policy error action


@dataclass(frozen=True, slots=True)
class ListenConfig:
    kind: ListenKind
    name: str
    type: ListenType
    address: str  # tcp/tcp6: host or IP (IPv6 without brackets); unix: the socket path
    port: int | None = None  # tcp/tcp6 only; 0 = any free port
    mode: int | None = None  # unix sockets only; octal in YAML ("0660")
    user: str | None = None  # unix sockets only: chown after bind
    group: str | None = None
    worker_pool: WorkerPoolConfig | None = None  # this listener's own limit, inside the server-wide one
    # systemd socket activation: take the inherited descriptor of this name (LISTEN_FDNAMES) instead of
    # binding; type/address/port still describe it and are used when not socket-activated.
    systemd_socket_name: str | None = None
    max_connections: int | None = None  # this listener's own limit on open connections, inside the server's
    location: Location | None = None

    def identity(self) -> tuple[object, ...]:
        """What makes it the same listener across a reload (worker pools are found by it)."""
        return (self.kind, self.name, self.type, self.address, self.port, self.systemd_socket_name)

    def binding(self) -> tuple[object, ...]:
        """What a reload must rebind the socket for when it changes."""
        return (*self.identity(), self.mode, self.user, self.group)

    def describe(self) -> str:
        """Human form used in logs: ``unix:/run/x.sock`` or ``tcp:127.0.0.1:23450``."""
        if self.type is ListenType.UNIX:
            return f"unix:{self.address}"
        return f"{self.type.value}:{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    json: bool = False
    level: LogLevel = LogLevel.INFO
    use_systemd: bool = False


@dataclass(frozen=True, slots=True)
class HttpClientConfig:
    """``server.http_client``. Defaults apply when a key is absent from the YAML file.

    An explicit ``0`` for a pool size or for ``idle_connection_timeout`` is kept as 0 and means "no limit",
    as in upstream pfxhttp (Go's http.Transport); the HTTP client layer must treat it so. ``timeout: 0``
    means "not set" and loads as DEFAULT_HTTP_TIMEOUT (upstream's default is 60s; ours is shorter because a
    lookup that slow holds an SMTP session and Postfix drops any socketmap connection after 100 s).
    """

    timeout: float = DEFAULT_HTTP_TIMEOUT  # one total deadline per backend request, seconds
    max_connections_per_host: int = 100
    max_idle_connections: int = 100
    max_idle_connections_per_host: int = 100
    idle_connection_timeout: float = 90.0  # seconds a pooled keep-alive connection may stay idle
    # Bytes of one response body, as sent (coded) and inflated; a larger one is TEMP "response too large".
    max_response_body_size: int = DEFAULT_MAX_RESPONSE_BODY_SIZE


@dataclass(frozen=True, slots=True)
class TlsConfig:
    enabled: bool = False
    skip_verify: bool = False
    root_ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCacheConfig:
    """pfxhttp's server.response_cache: serve the last good answer for the same name and key when the
    backend fails (bounded)."""

    enabled: bool = False
    ttl: float = 3600.0  # how long a last good answer may stand in for a failing backend, seconds


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password, not even in a traceback
        return f"BasicAuth(username={self.username!r}, password=<redacted>)"


class TokenContentType(enum.Enum):
    """How credentials and refresh tokens are posted to a token endpoint."""

    FORM = "application/x-www-form-urlencoded"
    JSON = "application/json"


class RefreshMode(enum.Enum):
    """How a refresh token is presented (``jwt_auth.refresh``)."""

    HEADER = "header"  # POST refresh_endpoint with an X-Refresh-Token field, as Nauthilus does
    BODY = "body"  # POST refresh_endpoint with {refresh_token_field: token} in content_type
    NONE = "none"  # never refresh: log in again


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret string (password, client secret): its repr never shows the value."""

    value: str

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    def __str__(self) -> str:
        return "<redacted>"


@dataclass(frozen=True, slots=True)
class JwtAuthConfig:
    """An entry's ``jwt_auth``: log in at token_endpoint with credentials, send ``Authorization: Bearer``.

    ``credentials`` are posted as given (form or JSON by content_type); every value is a Secret, since which
    one is the password is the API's business. Response fields are dotted paths into the JSON reply. With
    neither an expires_at nor an expires_in field in the reply, the token's own ``exp`` claim is read.
    """

    token_endpoint: str
    credentials: tuple[tuple[str, Secret], ...] = ()
    content_type: TokenContentType = TokenContentType.FORM
    token_field: str = "token"  # noqa: S105 - a JSON field name, not a secret
    refresh_token_field: str = "refresh_token"  # noqa: S105 - a JSON field name, not a secret
    expires_at_field: str = "expires_at"  # unix seconds
    expires_in_field: str = "expires_in"  # seconds from now
    refresh: RefreshMode = RefreshMode.HEADER
    refresh_endpoint: str | None = None  # None: token_endpoint


class OidcAuthMethod(enum.Enum):
    """How the client authenticates at the token endpoint (RFC 6749 section 2.3, OIDC Core section 9)."""

    # auto: private_key_jwt with a private_key_file, else client_secret_basic with a secret, else none
    AUTO = "auto"
    CLIENT_SECRET_BASIC = "client_secret_basic"  # noqa: S105 - a method name, not a secret
    CLIENT_SECRET_POST = "client_secret_post"  # noqa: S105 - a method name, not a secret
    PRIVATE_KEY_JWT = "private_key_jwt"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class OidcAuthConfig:
    """An entry's ``backend_oidc_auth``: OAuth2 client credentials with the token endpoint found by
    OpenID Connect discovery at configuration_uri (or given as token_endpoint)."""

    client_id: str
    configuration_uri: str | None = None
    token_endpoint: str | None = None  # skips discovery when set
    client_secret: Secret | None = None
    private_key_file: str | None = None  # where private_key was read from (for messages)
    private_key: Secret | None = None  # the PEM text of private_key_file, read at load and on reload
    scopes: tuple[str, ...] = ()
    auth_method: OidcAuthMethod = OidcAuthMethod.AUTO


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics over HTTP (off unless enabled); labels only ever come from configured names."""

    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9143
    path: str = "/metrics"
    basic_auth: BasicAuth | None = None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[ListenConfig, ...] = ()
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http_client: HttpClientConfig = field(default_factory=HttpClientConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    socketmap_max_reply_size: int = DEFAULT_SOCKETMAP_MAX_REPLY_SIZE
    response_cache: ResponseCacheConfig = field(default_factory=ResponseCacheConfig)
    worker_pool: WorkerPoolConfig | None = None  # server-wide limit on backend requests in flight
    run_as_user: str | None = None  # drop privileges to this user after binding (name or uid)
    run_as_group: str | None = None  # ... and this group (default: the user's primary group)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    jwt_db_path: str | None = None  # SQLite token store shared by restarts and workers; None: memory only
    workers: int = 1  # processes serving the same listening sockets (pre-fork); 1: this process alone
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # open Postfix connections per process, all listeners


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Per-entry answer cache (off unless configured)."""

    ttl: float  # fresh positive answers served without a backend call, seconds
    negative_ttl: float = 0.0  # fresh NOTFOUND / DUNNO answers, seconds (0: not cached)
    stale_if_error: float = 0.0  # how long past ttl an answer may be served when the backend fails, seconds
    max_entries: int = 10_000  # LRU bound
    key_attributes: tuple[str, ...] = ()  # policy services: the attributes the cache key is built from


@dataclass(frozen=True, slots=True)
class CircuitBreakerConfig:
    failures: int  # consecutive backend failures that open the circuit
    cooldown: float  # seconds to answer TEMP / the error action at once before a probe request


DEFAULT_POLICY_ERROR_ACTION = "DEFER_IF_PERMIT Service temporarily unavailable"


@dataclass(frozen=True, slots=True)
class EntryConfig:
    """One ``socket_maps.<name>`` or ``policy_services.<name>`` entry, with ``defaults`` merged in."""

    name: str
    kind: EntryKind
    target: str
    payload: str | None = None  # None: the kind's default payload (see backend.template)
    custom_headers: tuple[tuple[str, str], ...] = ()
    status_code: tuple[int, ...] = (200,)  # YAML: one code or a list
    not_found_status: tuple[int, ...] = (404,)  # answered NOTFOUND / DUNNO
    method: HttpMethod = HttpMethod.POST  # GET sends no body
    query: tuple[tuple[str, str], ...] = ()  # URL query parameter name -> template source
    value_template: str | None = None  # Jinja2 (sandboxed) over response/status/key/attrs; "" = not found
    value_field: str | None = None
    error_field: str | None = None
    no_error_value: str | None = None
    http_auth_basic: BasicAuth | None = None
    jwt_auth: JwtAuthConfig | None = None  # at most one of jwt_auth and backend_oidc_auth
    backend_oidc_auth: OidcAuthConfig | None = None
    http_request_compression: bool = False  # gzip the request body
    http_response_compression: bool = False  # ask for gzip responses (Accept-Encoding) and inflate them
    cache: CacheConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    error_action: str = DEFAULT_POLICY_ERROR_ACTION  # policy services: the answer when the backend fails
    on_error: OnError = OnError.REPLY
    # Location of each key's value as written in the file (after defaults merging, the location of
    # whichever of the entry or `defaults` supplied it). Key: field name; also "" for the entry itself.
    locations: Mapping[str, Location] = field(default_factory=dict)

    def location_of(self, key: str) -> Location | None:
        return self.locations.get(key) or self.locations.get("")

    def key_path(self, key: str) -> str:
        return f"{self.kind.value}.{self.name}.{key}"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    socket_maps: Mapping[str, EntryConfig] = field(default_factory=dict)
    policy_services: Mapping[str, EntryConfig] = field(default_factory=dict)
    source: str | None = None  # the file it was loaded from
    # One line per key that upstream pfxhttp knows and this version does not implement yet.
    # Also one per secret file that every user may read (names the file, never its content).
    warnings: tuple[str, ...] = ()
    # The PFXHTTP_* environment variables applied over the file (names only: values may be secrets).
    overrides: tuple[str, ...] = ()
