"""Backend authentication: bearer tokens for entries with ``jwt_auth`` or ``backend_oidc_auth``.

``tokens`` holds the shared vocabulary (Token, TokenFetcher); ``store`` keeps tokens in SQLite across restarts
and worker processes; ``source`` hands out one entry's ``Authorization`` value (single-flight fetches,
renewal before expiry, back-off after failures); ``jwtlogin`` and ``oidc`` are the two fetchers, on httpx (the
cold path: a token request happens once per token lifetime, never per lookup).
"""
