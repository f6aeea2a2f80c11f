"""An entry's backend authentication: ``jwt_auth`` and ``backend_oidc_auth`` (older name ``oidc_auth``).

Each gets a bearer token from a token endpoint and sends it as ``Authorization: Bearer`` with the entry's
requests. Each parser returns the model block, ``False`` for ``false`` or ``enabled: false`` (which turns
off a block of ``defaults``), or None after an error. The block's presence turns it on: ``enabled`` is there
for upstream's files, which always write it, and to turn a block off.

The values of a turned-off block are still checked (as the JSON Schema checks them), but nothing in it is
required and none of its files is read. Secrets come from the file or from ``*_file`` keys, which name a file
holding the secret (:mod:`pfxhttp.config.secrets`); in the model every secret is a
:class:`~pfxhttp.config.model.Secret`, whose repr hides it.
"""

from __future__ import annotations

import re
from typing import TypeVar

from yaml.nodes import Node, ScalarNode

from pfxhttp.config.blocks import block_keys, off_or_mapping
from pfxhttp.config.model import (
    JwtAuthConfig,
    OidcAuthConfig,
    OidcAuthMethod,
    RefreshMode,
    Secret,
    TokenContentType,
)
from pfxhttp.config.secrets import read_private_key, read_secret
from pfxhttp.config.values import check_endpoint
from pfxhttp.config.yamlnodes import (
    Item,
    Problems,
    as_bool,
    as_choice,
    as_str,
    describe,
    is_null,
    join,
    mapping_items,
    sequence_items,
)
from pfxhttp.errors import ConfigError

JWT_AUTH_KEYS = (
    "enabled",
    "token_endpoint",
    "credentials",
    "content_type",
    "token_field",
    "refresh_token_field",
    "expires_at_field",
    "expires_in_field",
    "refresh",
    "refresh_endpoint",
)
OIDC_AUTH_KEYS = (
    "enabled",
    "configuration_uri",
    "token_endpoint",
    "client_id",
    "client_secret",
    "client_secret_file",
    "private_key_file",
    "scopes",
    "auth_method",
)
FILE_SUFFIX = "_file"  # credentials: "<name>_file" reads the value of <name> from that file
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), scopes separated by one space.
SCOPE_PATTERN = r"[\x21\x23-\x5b\x5d-\x7e]+"
_SCOPE = re.compile(SCOPE_PATTERN)
_JWT_DEFAULTS = JwtAuthConfig(token_endpoint="")
_NEEDS_SECRET = (OidcAuthMethod.CLIENT_SECRET_BASIC, OidcAuthMethod.CLIENT_SECRET_POST)

E = TypeVar("E", bound=OidcAuthMethod | RefreshMode | TokenContentType)


class _Block:
    """Typed access to the keys of one auth block; each reader reports at the key's value."""

    def __init__(self, keys: dict[str, Item], path: str, problems: Problems) -> None:
        self.keys = keys
        self.path = path
        self.problems = problems
        # Keys with a value: null and "" count as not written, as everywhere in an entry.
        self.written = {
            name
            for name, item in keys.items()
            if not is_null(item.value) and not (isinstance(item.value, ScalarNode) and item.value.value == "")
        }

    @classmethod
    def open(cls, node: Node, path: str, table: tuple[str, ...], problems: Problems) -> _Block | bool | None:
        """The block at ``node`` with the keys of ``table``, or what stands instead: False (turned off), None
        (not a mapping, or no usable keys: reported)."""
        shape = off_or_mapping(node, path, problems)
        if shape is not True:
            return shape
        keys = block_keys(node, path, table, problems)
        return None if keys is None else cls(keys, path, problems)

    def at(self, name: str) -> str:
        return join(self.path, name)

    def enabled(self) -> bool:
        if "enabled" not in self.keys:
            return True
        return as_bool(self.keys["enabled"].value, self.at("enabled"), self.problems) is not False

    def text(self, name: str) -> str | None:
        if name not in self.keys:
            return None
        return as_str(self.keys[name].value, self.at(name), self.problems) or None

    def endpoint(self, name: str) -> str | None:
        url = self.text(name)
        if url is None:
            return None
        try:
            return check_endpoint(url, name)
        except ConfigError as exc:
            self.problems.wrap(self.keys[name].value, self.at(name), exc)
            return None

    def choice(self, enum_type: type[E], name: str, what: str) -> E | None:
        text = self.text(name)
        if text is None:
            return None
        return as_choice(enum_type, text.lower(), self.keys[name].value, self.at(name), self.problems, what)

    def require(self, node: Node, *names: str) -> bool:
        """Report a missing key (``names``: any one of them will do)."""
        if any(name in self.written for name in names):
            return True
        wanted = " or ".join(f"'{name}'" for name in names)
        self.problems.error(node, self.path, f"missing required key {wanted}")
        return False

    def exclusive(self, first: str, second: str) -> None:
        if first in self.written and second in self.written:
            self.problems.error(
                self.keys[second].key_node,
                self.at(second),
                f"{first} and {second} exclude each other: give the secret or the file that holds it",
            )


def parse_jwt_auth(node: Node, path: str, problems: Problems) -> JwtAuthConfig | bool | None:
    """``jwt_auth``: log in at token_endpoint with credentials; the JSON answer holds the token."""
    block = _Block.open(node, path, JWT_AUTH_KEYS, problems)
    if not isinstance(block, _Block):
        return block
    keys = block.keys
    errors_before = len(problems.errors)
    enabled = block.enabled()
    token_endpoint = block.endpoint("token_endpoint")
    refresh_endpoint = block.endpoint("refresh_endpoint")
    content_type = block.choice(TokenContentType, "content_type", "content type")
    refresh = block.choice(RefreshMode, "refresh", "refresh mode")
    fields = {
        name: block.text(name) or getattr(_JWT_DEFAULTS, name)
        for name in ("token_field", "refresh_token_field", "expires_at_field", "expires_in_field")
    }
    credentials_item = keys.get("credentials")
    if not enabled:
        if credentials_item is not None:
            _credentials(credentials_item.value, block.at("credentials"), problems, read=False)
        return False
    credentials: tuple[tuple[str, Secret], ...] | None = ()
    if credentials_item is not None:
        credentials = _credentials(credentials_item.value, block.at("credentials"), problems, read=True)
    block.require(node, "token_endpoint")
    if refresh is RefreshMode.NONE and refresh_endpoint is not None:
        problems.error(
            keys["refresh_endpoint"].key_node,
            block.at("refresh_endpoint"),
            "refresh is none, so no refresh request is ever sent: remove refresh_endpoint or choose a refresh "
            "mode",
        )
    if len(problems.errors) > errors_before or token_endpoint is None or credentials is None:
        return None
    if refresh is None:  # a separate refresh endpoint is called the RFC 6749 way, with the token in the body
        refresh = RefreshMode.BODY if refresh_endpoint is not None else RefreshMode.HEADER
    return JwtAuthConfig(
        token_endpoint=token_endpoint,
        credentials=credentials,
        content_type=content_type or _JWT_DEFAULTS.content_type,
        refresh=refresh,
        refresh_endpoint=refresh_endpoint,
        **fields,
    )


def _credentials(
    node: Node, path: str, problems: Problems, *, read: bool
) -> tuple[tuple[str, Secret], ...] | None:
    """``credentials: {name: value, other_file: /path}``, in the order written; ``read``: read the files
    (False for a turned-off block: only the shape is checked)."""
    items = mapping_items(node, path, problems)
    if items is None:
        return None
    values: dict[str, Secret] = {}
    seen: dict[str, str] = {}  # credential name -> the key that gave it
    ok = True
    for item in items:
        key_path = join(path, item.key)
        from_file = item.key.endswith(FILE_SUFFIX) and len(item.key) > len(FILE_SUFFIX)
        name = item.key.removesuffix(FILE_SUFFIX) if from_file else item.key
        if not name:
            problems.error(item.key_node, path, "a credential name must not be empty")
            ok = False
            continue
        if name in seen:
            problems.error(
                item.key_node,
                key_path,
                f"{seen[name]} and {item.key} exclude each other: give the secret or the file that holds it",
            )
            ok = False
            continue
        seen[name] = item.key
        if is_null(item.value):
            message = (
                "expected the name of the file that holds it, got nothing (null)"
                if from_file
                else 'expected a string, got nothing (null); write "" for an empty value'
            )
            problems.error(item.value, key_path, message)
            ok = False
            continue
        text = as_str(item.value, key_path, problems)
        if text is not None and from_file:
            if text == "":
                problems.error(item.value, key_path, 'expected the name of the file that holds it, got ""')
                text = None
            elif read:
                text = read_secret(item.value, key_path, problems)
        if text is None:
            ok = False
        else:
            values[name] = Secret(text)
    return tuple(values.items()) if ok else None


def parse_oidc_auth(node: Node, path: str, problems: Problems) -> OidcAuthConfig | bool | None:
    """``backend_oidc_auth`` / ``oidc_auth``: the OAuth 2.0 client credentials grant (RFC 6749 section 4.4)
    at the token endpoint given, or found by OpenID Connect discovery at configuration_uri."""
    block = _Block.open(node, path, OIDC_AUTH_KEYS, problems)
    if not isinstance(block, _Block):
        return block
    keys = block.keys
    errors_before = len(problems.errors)
    enabled = block.enabled()
    configuration_uri = block.endpoint("configuration_uri")
    token_endpoint = block.endpoint("token_endpoint")
    client_id = block.text("client_id")
    client_secret = block.text("client_secret")
    secret_file = block.text("client_secret_file")
    key_file = block.text("private_key_file")
    scopes = _scopes(keys["scopes"].value, block.at("scopes"), problems) if "scopes" in keys else ()
    method = block.choice(OidcAuthMethod, "auth_method", "auth_method")
    block.exclusive("client_secret", "client_secret_file")
    if not enabled:
        return False
    block.require(node, "client_id")
    block.require(node, "configuration_uri", "token_endpoint")
    if secret_file is not None and client_secret is None:
        client_secret = read_secret(
            keys["client_secret_file"].value, block.at("client_secret_file"), problems
        )
    private_key = None
    if key_file is not None:
        pem = read_private_key(keys["private_key_file"].value, block.at("private_key_file"), problems)
        private_key = Secret(pem) if pem is not None else None
    _check_method(block, method)
    if len(problems.errors) > errors_before or client_id is None or scopes is None:
        return None
    return OidcAuthConfig(
        client_id=client_id,
        configuration_uri=configuration_uri,
        token_endpoint=token_endpoint,
        client_secret=Secret(client_secret) if client_secret is not None else None,
        private_key_file=key_file,
        private_key=private_key,
        scopes=scopes,
        auth_method=method or OidcAuthMethod.AUTO,
    )


def _check_method(block: _Block, method: OidcAuthMethod | None) -> None:
    """The client authentication method must have what it signs or sends (RFC 6749 2.3.1, RFC 7523 2.2)."""
    if method in _NEEDS_SECRET and not block.written & {"client_secret", "client_secret_file"}:
        needs = "client_secret or client_secret_file"
    elif method is OidcAuthMethod.PRIVATE_KEY_JWT and "private_key_file" not in block.written:
        needs = "private_key_file"
    else:
        return
    assert method is not None
    item = block.keys["auth_method"]
    block.problems.error(item.value, block.at("auth_method"), f"auth_method {method.value} needs {needs}")


def _scopes(node: Node, path: str, problems: Problems) -> tuple[str, ...] | None:
    """A list of scopes, or one string of scopes separated by blanks (the form of the ``scope`` parameter)."""
    if is_null(node):
        return ()
    if isinstance(node, ScalarNode):
        text = as_str(node, path, problems)
        elements: list[tuple[str, Node, str]] = [(path, node, token) for token in (text or "").split()]
        if text is None:
            return None
    else:
        nodes = sequence_items(node, path, problems)
        if nodes is None:
            return None
        elements = []
        for index, element in enumerate(nodes):
            element_path = f"{path}[{index}]"
            token = as_str(element, element_path, problems)
            if token is None:
                if is_null(element):
                    problems.error(element, element_path, f"expected a scope, got {describe(element)}")
                return None
            elements.append((element_path, element, token))
    scopes: list[str] = []
    for element_path, element, token in elements:
        if not _SCOPE.fullmatch(token):
            problems.error(
                element,
                element_path,
                f"scope {token!r} must be printable ASCII without blanks, '\"' or '\\' (RFC 6749 3.3); "
                "write one scope per list item",
            )
            return None
        if token in scopes:
            problems.error(element, element_path, f"duplicate scope {token!r}")
            return None
        scopes.append(token)
    return tuple(scopes)
