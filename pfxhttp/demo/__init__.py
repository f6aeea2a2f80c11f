"""The embedded default for ``pfxhttp demo``: an example config and a small mail-directory HTTP API."""
