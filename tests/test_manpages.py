"""The manual pages: pfxhttp.yml(5) documents every key the loader reads, and groff finds nothing to warn about."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pfxhttp.config.keytree import Shape, key_tree, leaf_paths

MAN = Path(__file__).resolve().parent.parent / "man"
PAGES = [MAN / "pfxhttp.8", MAN / "pfxhttp.yml.5"]


def plain(page: Path) -> str:
    """The page's text without font escapes, so ``\\fBkey\\fP`` reads as ``key``."""
    return re.sub(r"\\f[BIRP]|\\\(aq|\\&", " ", page.read_text()).replace("\\-", "-")


def section(text: str, title: str) -> str:
    start = text.index(f".SH {title}\n")
    end = text.find(".SH ", start + 1)
    return text[start : end if end >= 0 else None]


def test_the_manual_documents_every_key() -> None:
    text = plain(MAN / "pfxhttp.yml.5")
    words = set(re.findall(r"[A-Za-z_]+", text))
    undocumented: list[str] = []
    for path, key in leaf_paths(key_tree()):
        if key.shape is Shape.IGNORED:
            continue
        parts = path.replace("[]", "").split(".")
        if parts[-1] not in words:
            undocumented.append(path)
        # Server settings are documented under their full path (server.metrics.port), not just the last word.
        if parts[0] == "server" and parts[1] != "listen" and f"server.{parts[1]}" not in text:
            undocumented.append(path)
    assert undocumented == []


def test_ignored_keys_are_listed_as_not_yet_implemented_and_only_they() -> None:
    text = plain(MAN / "pfxhttp.yml.5")
    listed = section(text, "NOT YET IMPLEMENTED")
    ignored = {path.split(".")[-1] for path, key in leaf_paths(key_tree()) if key.shape is Shape.IGNORED}
    assert [name for name in sorted(ignored) if name not in listed] == []
    implemented = {path.split(".")[-1] for path, key in leaf_paths(key_tree()) if key.shape is Shape.VALUE}
    words = set(re.findall(r"[A-Za-z_]+", listed))
    assert sorted((implemented - ignored) & words) == []


def test_the_manual_explains_the_environment_overrides() -> None:
    environment = section(plain(MAN / "pfxhttp.yml.5"), "ENVIRONMENT")
    for needed in (
        "PFXHTTP_SERVER__LOGGING__LEVEL=debug",
        "PFXHTTP_SERVER__LISTEN__0__PORT",
        "two underscores",
    ):
        assert needed in environment


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_groff_prints_no_warning(page: Path) -> None:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (Debian: groff-base)")
    result = subprocess.run(
        [groff, "-man", "-ww", "-z", "-t", str(page)], capture_output=True, text=True, check=False, timeout=60
    )
    assert (result.returncode, result.stderr) == (0, "")
