"""The manual pages: pfxhttp.yml(5) documents every key the loader reads, and groff finds nothing to warn about."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pfxhttp.config import ListenKind, blocks, entries, listen, serversection
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


# The two sections whose ``.TP`` tags name keys, and the path their top-level tags are relative to.
KEY_SECTIONS = {"SERVER": ("",), "SOCKET_MAPS AND POLICY_SERVICES": ("socket_maps.*.", "policy_services.*.")}
KEY = re.compile(r"[a-z_]+(\.[a-z_]+)*")


def bold_words(request: str) -> list[str]:
    """The bold words of one ``.B``/``.BR`` request: ``.BR a ", " b`` alternates bold and roman."""
    macro, _, rest = request.partition(" ")
    words = shlex.split(rest)
    return words if macro == ".B" else words[::2]


def documented_paths(page: Path) -> list[tuple[str, ...]]:
    """The dotted paths each key tag of the page documents, one tuple per tag: a tag's words are taken
    relative to the tag that opened the enclosing ``.RS`` block (``server.listen`` > ``port`` is
    ``server.listen.port``), so a key must be spelled under its whole path, not found by its last word."""
    tags: list[tuple[str, ...]] = []
    context: list[tuple[str, ...]] = []
    last: tuple[str, ...] = ()
    lines = page.read_text().splitlines()
    for number, line in enumerate(lines):
        if line.startswith(".SH "):
            title = line[4:].strip().strip('"')
            context = [KEY_SECTIONS[title]] if title in KEY_SECTIONS else []
        elif not context:
            continue
        elif line == ".RS":
            context.append(tuple(f"{path}." for path in last))
        elif line == ".RE":
            context.pop()
        elif line == ".TP" and number + 1 < len(lines):
            names = [w for w in bold_words(lines[number + 1].replace("\\-", "-")) if KEY.fullmatch(w)]
            last = tuple(prefix + name for prefix in context[-1] for name in names)
            tags.append(last)
    return tags


def not_yet_implemented(page: Path) -> set[str]:
    """The bold words of the page's NOT YET IMPLEMENTED section, without their list punctuation."""
    text = page.read_text()
    listed = text[text.index(".SH NOT YET IMPLEMENTED\n") :]
    listed = listed[: listed.index("\n.SH ")]
    return {w.rstrip(",.") for line in listed.splitlines() if line.startswith(".B") for w in bold_words(line)}


def tree_paths(shape: Shape) -> set[str]:
    # The page writes a listener's keys as server.listen.port, not server.listen[].port.
    return {path.replace("[]", "") for path, key in leaf_paths(key_tree()) if key.shape is shape}


def test_the_manual_documents_every_key_under_its_whole_path() -> None:
    documented = {path for tag in documented_paths(MAN / "pfxhttp.yml.5") for path in tag}
    assert sorted(tree_paths(Shape.VALUE) - documented) == []


def test_every_key_tag_of_the_manual_names_a_key_or_a_block() -> None:
    # A typo or a removed key in the page: none of the paths a tag stands for exists.
    known = tree_paths(Shape.VALUE)
    prefixes = {path[: i + 1] for path in known for i, char in enumerate(path) if char == "."}
    tags = documented_paths(MAN / "pfxhttp.yml.5")
    assert len(tags) > 50  # the parse found the key lists
    assert [tag for tag in tags if not any(p in known or f"{p}." in prefixes for p in tag)] == []


def test_the_manual_documents_every_key_the_loader_reads() -> None:
    # The loader's own key tables, a second source besides the key tree: each key under its whole path,
    # as a key tag or as the block a tag's path runs through; deferred keys in NOT YET IMPLEMENTED.
    tagged = {path for tag in documented_paths(MAN / "pfxhttp.yml.5") for path in tag}
    documented = tagged | {path[:i] for path in tagged for i, char in enumerate(path) if char == "."}
    deferred = not_yet_implemented(MAN / "pfxhttp.yml.5")
    either = ("socket_maps.*", "policy_services.*")
    expected = {
        "server": (*serversection.SERVER_KEYS, *serversection.SERVER_DEFERRED),
        "server.listen": listen.LISTEN_KEYS,
        "server.worker_pool": blocks.WORKER_POOL_KEYS,
        "server.response_cache": blocks.RESPONSE_CACHE_KEYS,
        "server.metrics": blocks.METRICS_KEYS,
    }
    missing = [
        f"{block}.{key}"
        for block, keys in expected.items()
        for key in keys
        if f"{block}.{key}" not in documented | deferred
    ]
    entry_paths = (
        *entries.ENTRY_KEYS,
        *(f"cache.{key}" for key in blocks.CACHE_KEYS),
        *(f"circuit_breaker.{key}" for key in blocks.CIRCUIT_BREAKER_KEYS),
    )
    missing += [path for path in entry_paths if not any(f"{entry}.{path}" in documented for entry in either)]
    missing += [key for key in entries.ENTRY_DEFERRED if key not in deferred]
    # The kinds of listener are values, not keys: they appear in the page as words.
    words = set(re.findall(r"[a-z_]+", plain(MAN / "pfxhttp.yml.5")))
    missing += [kind.value for kind in ListenKind if kind.value not in words]
    assert missing == []


def test_ignored_keys_are_listed_as_not_yet_implemented_and_only_they() -> None:
    # Server keys under their whole path (server.http_client.proxy), entry keys under their name.
    bold = not_yet_implemented(MAN / "pfxhttp.yml.5")
    ignored = {
        re.sub(r"^(socket_maps|policy_services)\.\*\.", "", path) for path in tree_paths(Shape.IGNORED)
    }
    assert sorted(ignored - bold) == []
    implemented = {
        re.sub(r"^(socket_maps|policy_services)\.\*\.", "", path) for path in tree_paths(Shape.VALUE)
    }
    assert sorted(bold & (implemented | {path.split(".")[-1] for path in implemented})) == []


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
