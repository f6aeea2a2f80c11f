"""A real token server on loopback for the backend-auth tests: JWT login, refresh, OIDC, a protected API.

:class:`TokenServer` issues real RS256 JWTs (signed with an RSA key generated per server) and checks them on
its protected route, so a test can follow a token from the token endpoint to the API and back on 401.
Everything the tests steer is a plain attribute: ``fault`` / ``faults`` simulate an outage, ``expiry`` and
``nest`` shape the login replies, ``lifetime`` is the token lifetime in seconds. ``requests`` records every
request; ``count(path)`` counts them per endpoint.

Error replies of the token endpoints echo the request body (the credentials) on purpose: a client that put
a body into its error messages would show it.

Routes (``url`` is ``http://127.0.0.1:<port>``):

* ``POST /login`` - pfxhttp style: ``username`` + ``password`` as form or JSON (by Content-Type), checked
  against ``users``; replies ``{token, refresh_token, <expiry>}`` shaped by ``expiry`` and ``nest``.
* ``POST /refresh`` - refresh token in ``X-Refresh-Token``, no credentials; replies like /login but without
  a refresh token (the old one stays valid) unless ``header_refresh_rotates``.
* ``POST /auth/login`` - PostfixMe style: JSON ``{mailbox, password}`` ->
  ``{access_token, refresh_token, token_type, expires_in}``.
* ``POST /auth/refresh`` - JSON ``{refresh_token}`` -> a new pair; refresh tokens rotate: a used one gets 401.
* ``GET /.well-known/openid-configuration`` - the discovery document (``discovery_extra`` is merged in, a
  None value removes a key).
* ``POST /oauth2/token`` - client credentials for the clients of :meth:`add_client`, each bound to one method:
  client_secret_basic, client_secret_post, private_key_jwt (assertion signature, aud, exp, iss=sub=client
  and a fresh jti checked) or none. The reply follows ``oidc_expiry``.
* ``* /api/...`` - the protected API: ``Authorization: Bearer <jwt>`` with a valid signature, exp and a jti
  not revoked (:meth:`revoke_all`) -> 200 ``{"data": {"result": <key of a JSON body or null>, "sub": ...}}``;
  else 401 with ``WWW-Authenticate: Bearer error="invalid_token"`` (RFC 6750 section 3). A key in
  ``refused_keys`` gets that 401 whatever the token (an API that answers 401 per resource, or that never
  accepts these tokens when ``refuse_every_key``). Faults never apply.
"""

from __future__ import annotations

import base64
import enum
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

import jwt
import orjson
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from pfxhttp.demo.httpd import HttpReply, HttpRequest, serve_http

LOGIN = "/login"
REFRESH = "/refresh"
PM_LOGIN = "/auth/login"
PM_REFRESH = "/auth/refresh"
DISCOVERY = "/.well-known/openid-configuration"
OIDC_TOKEN = "/oauth2/token"
API = "/api/"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS256", "ES256", "ES384", "ES512", "EdDSA"]


class Fault(enum.Enum):
    """What the token endpoints (not the API) do instead of answering."""

    NONE = "none"
    REFUSE = "refuse"  # 503 Service Unavailable
    HANG = "hang"  # sleep hang_seconds (longer than any client timeout), then 503
    REJECT = "reject"  # 401, as for wrong credentials
    FORBID = "forbid"  # 403
    NOT_JSON = "not-json"  # 200 with an HTML body


class Expiry(enum.Enum):
    """How a token reply states the lifetime."""

    EXPIRES_AT = "expires_at"  # unix seconds, a number
    EXPIRES_AT_STRING = "expires_at_string"  # unix seconds as a numeric string
    EXPIRES_IN = "expires_in"  # seconds from now
    JWT_ONLY = "jwt_only"  # no field: read the JWT's exp
    OPAQUE = "opaque"  # no field and a token that is no JWT (the API refuses it)


class ClientMethod(enum.Enum):
    CLIENT_SECRET_BASIC = "client_secret_basic"
    CLIENT_SECRET_POST = "client_secret_post"
    PRIVATE_KEY_JWT = "private_key_jwt"
    NONE = "none"


@dataclass(frozen=True)
class Client:
    client_id: str
    method: ClientMethod
    secret: str | None = None
    public_key: PublicKeyTypes | None = None


def _json(document: object, status: int = 200) -> HttpReply:
    return HttpReply(status, orjson.dumps(document))


def _echo_error(status: int, request: HttpRequest, error: str) -> HttpReply:
    return _json({"error": error, "echo": request.body.decode("utf-8", "replace")}, status)


def _fields(request: HttpRequest) -> dict[str, str]:
    """The body as a flat dict of strings: JSON object or form, by Content-Type."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            document = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return {}
        return {k: v for k, v in document.items() if isinstance(v, str)} if isinstance(document, dict) else {}
    return dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))


class TokenServer:
    """The token server of the module docstring; ``await start(nursery)`` serves it and sets ``url``."""

    def __init__(self, *, users: dict[str, str] | None = None, lifetime: int = 300) -> None:
        self.url = ""
        self.users: dict[str, str] = dict(users or {})  # username (or mailbox) -> password
        self.clients: dict[str, Client] = {}
        self.lifetime = lifetime
        self.fault = Fault.NONE  # for every token endpoint
        self.faults: dict[str, Fault] = {}  # per path, over ``fault``
        self.hang_seconds = 30.0
        self.expiry = Expiry.EXPIRES_AT  # /login and /refresh replies
        self.oidc_expiry = Expiry.EXPIRES_IN  # /oauth2/token: EXPIRES_IN, JWT_ONLY or OPAQUE
        self.nest: tuple[str, ...] = ()  # /login and /refresh replies wrapped in these keys, outermost first
        self.header_refresh_rotates = False
        self.discovery_extra: dict[str, object] = {}
        self.refused_keys: set[str] = set()  # /api/ answers 401 for these keys, valid token or not
        self.refuse_every_key = False
        self.requests: list[HttpRequest] = []
        self.scopes_granted: list[str | None] = []  # the scope parameter of each /oauth2/token success
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._refresh_tokens: dict[str, str] = {}  # live refresh token -> subject
        self._issued: set[str] = set()
        self._revoked: set[str] = set()
        self._assertion_ids: set[str] = set()

    async def start(self, nursery: trio.Nursery) -> str:
        """Serve on 127.0.0.1 with an ephemeral port until the nursery is cancelled; returns ``url``."""
        port = await nursery.start(serve_http, self)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    # -- what tests use besides the attributes ---------------------------------------------------------------

    def count(self, path: str) -> int:
        """Requests seen at ``path`` (query string ignored)."""
        return sum(1 for r in self.requests if r.path.split("?", 1)[0] == path)

    def last(self, path: str) -> HttpRequest:
        """The last request seen at ``path``."""
        return [r for r in self.requests if r.path.split("?", 1)[0] == path][-1]

    def add_client(
        self,
        client_id: str,
        method: ClientMethod,
        *,
        secret: str | None = None,
        public_key: PublicKeyTypes | None = None,
    ) -> None:
        """Register an OIDC client bound to one authentication method."""
        self.clients[client_id] = Client(client_id, method, secret, public_key)

    def issue(
        self, subject: str, *, lifetime: int | None = None, claims: dict[str, object] | None = None
    ) -> tuple[str, int]:
        """A signed access token for ``subject`` (plus ``claims``) and its exp (unix seconds)."""
        now = int(time.time())
        exp = now + (self.lifetime if lifetime is None else lifetime)
        jti = secrets.token_urlsafe(12)
        self._issued.add(jti)
        payload = {"iss": self.url, "sub": subject, "iat": now, "exp": exp, "jti": jti, **(claims or {})}
        return jwt.encode(payload, self._key, algorithm="RS256"), exp

    def verify(self, token: str) -> dict[str, object] | None:
        """The claims of a valid, unexpired, unrevoked token issued here, else None."""
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                options={"require": ["exp", "jti", "sub"]},
            )
        except jwt.PyJWTError:
            return None
        return None if claims["jti"] in self._revoked else claims

    def revoke_all(self) -> None:
        """Every access token issued so far is refused by the API from now on (refresh tokens survive)."""
        self._revoked |= self._issued

    # -- the HTTP side ----------------------------------------------------------------------------------------

    async def __call__(self, request: HttpRequest) -> HttpReply:
        self.requests.append(request)
        path = request.path.split("?", 1)[0]
        if path.startswith(API):
            return self._api(request)
        route = {
            LOGIN: self._login,
            REFRESH: self._refresh,
            PM_LOGIN: self._pm_login,
            PM_REFRESH: self._pm_refresh,
            DISCOVERY: self._discovery,
            OIDC_TOKEN: self._oidc_token,
        }.get(path)
        if route is None:
            return _json({"error": "no such route"}, 404)
        fault = self.faults.get(path, self.fault)
        if fault is Fault.HANG:
            await trio.sleep(self.hang_seconds)
        if fault in (Fault.HANG, Fault.REFUSE):
            return _echo_error(503, request, "unavailable")
        if fault is Fault.REJECT:
            return _echo_error(401, request, "unauthorized")
        if fault is Fault.FORBID:
            return _echo_error(403, request, "forbidden")
        if fault is Fault.NOT_JSON:
            return HttpReply(200, b"<html>" + request.body + b"</html>", (("Content-Type", "text/html"),))
        return route(request)

    def _new_refresh(self, subject: str) -> str:
        token = "rt-" + secrets.token_urlsafe(18)
        self._refresh_tokens[token] = subject
        return token

    def _pfx_reply(self, subject: str, refresh: str | None) -> HttpReply:
        if self.expiry is Expiry.OPAQUE:
            token, exp = "opaque-" + secrets.token_urlsafe(18), 0
        else:
            token, exp = self.issue(subject)
        document: dict[str, object] = {"token": token}
        if refresh is not None:
            document["refresh_token"] = refresh
        if self.expiry is Expiry.EXPIRES_AT:
            document["expires_at"] = exp
        elif self.expiry is Expiry.EXPIRES_AT_STRING:
            document["expires_at"] = str(exp)
        elif self.expiry is Expiry.EXPIRES_IN:
            document["expires_in"] = self.lifetime
        for name in reversed(self.nest):
            document = {name: document}
        return _json(document)

    def _login(self, request: HttpRequest) -> HttpReply:
        fields = _fields(request)
        user = fields.get("username", "")
        if user not in self.users or self.users[user] != fields.get("password"):
            return _echo_error(401, request, "invalid credentials")
        return self._pfx_reply(user, self._new_refresh(user))

    def _refresh(self, request: HttpRequest) -> HttpReply:
        subject = self._refresh_tokens.get(request.headers.get("x-refresh-token", ""))
        if subject is None:
            return _echo_error(401, request, "invalid refresh token")
        if not self.header_refresh_rotates:
            return self._pfx_reply(subject, None)
        del self._refresh_tokens[request.headers["x-refresh-token"]]
        return self._pfx_reply(subject, self._new_refresh(subject))

    def _pm_pair(self, subject: str) -> HttpReply:
        token, _exp = self.issue(subject)
        refresh = self._new_refresh(subject)
        return _json(
            {
                "access_token": token,
                "refresh_token": refresh,
                "token_type": "bearer",
                "expires_in": self.lifetime,
            }
        )

    def _pm_login(self, request: HttpRequest) -> HttpReply:
        fields = _fields(request)
        mailbox = fields.get("mailbox", "")
        if mailbox not in self.users or self.users[mailbox] != fields.get("password"):
            return _echo_error(401, request, "invalid credentials")
        return self._pm_pair(mailbox)

    def _pm_refresh(self, request: HttpRequest) -> HttpReply:
        subject = self._refresh_tokens.pop(_fields(request).get("refresh_token", ""), None)
        if subject is None:  # unknown or already used: rotation makes every refresh token single-use
            return _echo_error(401, request, "invalid refresh token")
        return self._pm_pair(subject)

    def _discovery(self, _request: HttpRequest) -> HttpReply:
        document: dict[str, object] = {
            "issuer": self.url,
            "token_endpoint": self.url + OIDC_TOKEN,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": [m.value for m in ClientMethod],
            "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGORITHMS,
        }
        document.update(self.discovery_extra)
        return _json({k: v for k, v in document.items() if v is not None})

    def _authenticate(self, request: HttpRequest, fields: dict[str, str]) -> Client | None:
        """The client the request authenticates as, with the method it registered, or None."""
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                pair = base64.b64decode(authorization[6:], validate=True).decode("ascii")
            except ValueError:
                return None
            client_id, _, secret = (unquote_plus(part) for part in pair.partition(":"))
            client = self.clients.get(client_id)
            ok = client is not None and client.method is ClientMethod.CLIENT_SECRET_BASIC
            return client if ok and client is not None and client.secret == secret else None
        if "client_assertion" in fields:
            return self._assertion_client(fields)
        client = self.clients.get(fields.get("client_id", ""))
        if client is None:
            return None
        if "client_secret" in fields:
            ok = client.method is ClientMethod.CLIENT_SECRET_POST and client.secret == fields["client_secret"]
            return client if ok else None
        return client if client.method is ClientMethod.NONE else None

    def _assertion_client(self, fields: dict[str, str]) -> Client | None:
        """RFC 7523 section 3: iss = sub = a registered client, aud = this token endpoint, exp, unused jti."""
        if fields.get("client_assertion_type") != ASSERTION_TYPE:
            return None
        assertion = fields["client_assertion"]
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        client = self.clients.get(str(unverified.get("iss")))
        if client is None or client.method is not ClientMethod.PRIVATE_KEY_JWT or client.public_key is None:
            return None
        try:
            claims = jwt.decode(
                assertion,
                client.public_key,  # type: ignore[arg-type]  # pyjwt accepts any asymmetric public key
                algorithms=ASSERTION_ALGORITHMS,
                audience=self.url + OIDC_TOKEN,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError:
            return None
        if claims["sub"] != client.client_id or claims["jti"] in self._assertion_ids:
            return None
        if fields.get("client_id", client.client_id) != client.client_id:
            return None
        self._assertion_ids.add(claims["jti"])
        return client

    def _oidc_token(self, request: HttpRequest) -> HttpReply:
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return _echo_error(400, request, "invalid_request")
        fields = _fields(request)
        if fields.get("grant_type") != "client_credentials":
            return _echo_error(400, request, "unsupported_grant_type")
        client = self._authenticate(request, fields)
        if client is None:
            return _echo_error(401, request, "invalid_client")
        scope = fields.get("scope")
        self.scopes_granted.append(scope)
        document: dict[str, object] = {"token_type": "Bearer"}
        if self.oidc_expiry is Expiry.OPAQUE:
            document["access_token"] = "opaque-" + secrets.token_urlsafe(18)
        else:
            claims: dict[str, object] = {"scope": scope} if scope else {}
            document["access_token"] = self.issue(client.client_id, claims=claims)[0]
            if self.oidc_expiry is not Expiry.JWT_ONLY:
                document["expires_in"] = self.lifetime
        if scope:
            document["scope"] = scope
        return _json(document)

    def _api(self, request: HttpRequest) -> HttpReply:
        authorization = request.headers.get("authorization", "")
        claims = self.verify(authorization[7:]) if authorization.lower().startswith("bearer ") else None
        try:
            body = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            body = None
        key = body.get("key") if isinstance(body, dict) else None
        if claims is None or self.refuse_every_key or key in self.refused_keys:
            return HttpReply(
                401,
                b'{"error":"invalid_token"}',
                (("Content-Type", "application/json"), ("WWW-Authenticate", 'Bearer error="invalid_token"')),
            )
        return _json({"data": {"result": key, "sub": claims["sub"]}})
