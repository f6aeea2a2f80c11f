"""The client-side ssl.SSLContext for https backends, built once at load from ``server.tls``.

Certificate and host name verification are on unless ``skip_verify`` says otherwise (and ``tls.enabled``
is what opts into any of the settings below: without it, https targets get the system trust store only).
All files are read here, at load, so that no handshake ever reads a file inside the trio loop; that is also
why a ``root_ca`` directory is loaded file by file instead of through OpenSSL's lazy hashed lookup.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pfxhttp.config.model import TlsConfig
from pfxhttp.errors import ConfigError

_KEY_PATH = "server.tls"


def _load_root_ca(ctx: ssl.SSLContext, root_ca: str) -> None:
    path = Path(root_ca)
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            for file in files:
                try:
                    ctx.load_verify_locations(cafile=str(file))
                except ssl.SSLError as exc:
                    raise ConfigError(
                        f"{file}: not a PEM certificate file: {exc}", path=f"{_KEY_PATH}.root_ca"
                    ) from exc
            if not files:
                raise ConfigError(f"{root_ca}: directory holds no CA files", path=f"{_KEY_PATH}.root_ca")
        else:
            ctx.load_verify_locations(cafile=root_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA {root_ca}: {exc}", path=f"{_KEY_PATH}.root_ca") from exc


def build_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """Return the context every https connection uses; ConfigError if a configured file cannot be loaded."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    # pfxhttp speaks HTTP/1.1 only; say so in the handshake (RFC 7301) so that h2-first servers stay on 1.1.
    ctx.set_alpn_protocols(["http/1.1"])
    if not tls.enabled:
        return ctx
    if tls.skip_verify:
        # Order matters: check_hostname must be off before verify_mode may become CERT_NONE.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.root_ca:
        _load_root_ca(ctx, tls.root_ca)
    if tls.key and not tls.cert:
        raise ConfigError("a client key needs a client certificate (cert)", path=f"{_KEY_PATH}.key")
    if tls.cert:
        try:
            ctx.load_cert_chain(certfile=tls.cert, keyfile=tls.key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load client certificate {tls.cert} / key {tls.key or tls.cert}: {exc}",
                path=f"{_KEY_PATH}.cert",
            ) from exc
    return ctx
