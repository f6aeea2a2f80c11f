"""Configuration: the pfxhttp YAML file (upstream croessner/pfxhttp format) read into a frozen, typed model.

Pure data and parsing only: payload templates and JSONPath fields are compiled later, in the backend layer.
"""

from pfxhttp.config.loader import (
    DEFAULT_SEARCH_PATH,
    find_config,
    load_config,
    parse_config,
    search_path,
)
from pfxhttp.config.model import (
    DEFAULT_HTTP_TIMEOUT,
    DEFAULT_POLICY_ERROR_ACTION,
    DEFAULT_SOCKETMAP_MAX_REPLY_SIZE,
    BasicAuth,
    CacheConfig,
    CircuitBreakerConfig,
    Config,
    EntryConfig,
    EntryKind,
    HttpClientConfig,
    HttpMethod,
    ListenConfig,
    ListenKind,
    ListenType,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    OnError,
    ResponseCacheConfig,
    ServerConfig,
    TlsConfig,
    WorkerPoolConfig,
)
from pfxhttp.config.values import parse_duration

__all__ = [
    "DEFAULT_HTTP_TIMEOUT",
    "DEFAULT_POLICY_ERROR_ACTION",
    "DEFAULT_SEARCH_PATH",
    "DEFAULT_SOCKETMAP_MAX_REPLY_SIZE",
    "BasicAuth",
    "CacheConfig",
    "CircuitBreakerConfig",
    "Config",
    "EntryConfig",
    "EntryKind",
    "HttpClientConfig",
    "HttpMethod",
    "ListenConfig",
    "ListenKind",
    "ListenType",
    "LogLevel",
    "LoggingConfig",
    "MetricsConfig",
    "OnError",
    "ResponseCacheConfig",
    "ServerConfig",
    "TlsConfig",
    "WorkerPoolConfig",
    "find_config",
    "load_config",
    "parse_config",
    "parse_duration",
    "search_path",
]
