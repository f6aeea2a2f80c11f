"""YAML node access for the loader: composing, merge keys, typed scalars, problem collection.

The loader works on PyYAML *nodes* (``yaml.compose`` with the safe resolver), never on constructed Python
objects, because only nodes keep ``start_mark`` (the line and column of every key and value) and only nodes
show duplicate keys, which PyYAML's constructor silently lets the last one win.

Aliases are bounded: every ``*alias`` stands for a copy of its anchor's whole subtree wherever the loader
walks it (``<<`` merges included), so a few hundred bytes of nested aliases can stand for millions of nodes
(a "billion laughs"). :func:`compose` counts the nodes the aliases stand for as it composes and refuses a file
beyond :data:`MAX_ALIAS_NODES`, at the alias that crossed it.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.error import Mark, MarkedYAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pfxhttp.errors import ConfigError, ConfigErrors, Location

_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
# Strings Go's strconv.ParseBool accepts; viper decodes quoted booleans this way, so configs may carry them.
_TRUE_WORDS = frozenset({"1", "t", "T", "true", "True", "TRUE"})
_FALSE_WORDS = frozenset({"0", "f", "F", "false", "False", "FALSE"})

E = TypeVar("E", bound=enum.Enum)

# The most nodes the aliases of one file may stand for, counted as copies of their anchors' subtrees. A real
# config merging a 30-key block into a thousand entries stays far below; a walk of this many nodes takes
# about a second. Upstream's YAML library (go-yaml v3) refuses such "excessive aliasing" too.
MAX_ALIAS_NODES = 250_000


# Keys and values set from the environment count as written after the whole file (so a check between two
# keys blames the override), and their messages name the variable instead of a line.
_AFTER_THE_FILE = 1 << 62


class EnvMark(Mark):
    """The mark of a node an environment variable (``name``) put into the tree."""

    def __init__(self, variable: str) -> None:
        super().__init__(variable, _AFTER_THE_FILE, _AFTER_THE_FILE, 0, None, 0)


@dataclass(frozen=True)
class EnvironmentLocation(Location):
    """Where an override came from: ``file`` holds the environment variable's name; line and column are 1."""

    def __str__(self) -> str:
        return f"environment variable {self.file}"


def env_location(variable: str) -> EnvironmentLocation:
    return EnvironmentLocation(variable, 1, 1)


@dataclass(frozen=True, slots=True)
class Item:
    """One key of a mapping after merge keys were applied."""

    key: str
    key_node: Node
    value: Node


@dataclass(slots=True)
class Problems:
    """Collects every error and warning of one file, so ``pfxhttp check`` can show them all at once."""

    source: str
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[tuple[int, str]] = field(default_factory=list)

    def loc(self, node: Node) -> Location:
        mark = node.start_mark
        if isinstance(mark, EnvMark):
            return env_location(mark.name)
        return Location(self.source, mark.line + 1, mark.column + 1)

    def error(self, node: Node | None, path: str, message: str, suggestion: str | None = None) -> None:
        location = self.loc(node) if node is not None else None
        self.errors.append(ConfigError(message, location=location, path=path, suggestion=suggestion))

    def error_at(self, location: Location, path: str, message: str) -> None:
        """An error about a value already parsed (a check between keys), at its recorded location."""
        self.errors.append(ConfigError(message, location=location, path=path))

    def wrap(self, node: Node, path: str, exc: ConfigError) -> None:
        """Re-raise a value parser's location-less error at ``node``."""
        self.error(node, path, exc.message, exc.suggestion)

    def warn(self, node: Node, path: str, message: str) -> None:
        mark = node.start_mark
        if isinstance(mark, EnvMark):
            self.warnings.append((_AFTER_THE_FILE, f"{path} (environment variable {mark.name}): {message}"))
            return
        line = mark.line + 1
        self.warnings.append((line, f"{path} (line {line}): {message}"))

    def warn_variable(self, variable: str, message: str) -> None:
        """A warning about an environment variable as a whole (one that names no key)."""
        self.warnings.append((_AFTER_THE_FILE, f"environment variable {variable}: {message}"))

    def deferred(self, node: Node, path: str) -> None:
        self.warn(node, path, "not supported by this version yet; ignored")

    def raise_if_any(self) -> None:
        if self.errors:
            # File order: the user fixes them top to bottom; then the environment's, then those without a place.
            raise ConfigErrors(sorted(self.errors, key=_error_order))

    def sorted_warnings(self) -> tuple[str, ...]:
        return tuple(text for _, text in sorted(self.warnings, key=lambda w: w[0]))


def _error_order(error: ConfigError) -> tuple[int, int, int, str]:
    location = error.location
    if location is None:
        return (2, 0, 0, "")
    if isinstance(location, EnvironmentLocation):
        return (1, 0, 0, location.file)
    return (0, location.line, location.column, "")


class _AliasBomb(MarkedYAMLError):
    """The aliases of a document stand for more than :data:`MAX_ALIAS_NODES` nodes."""


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting the nodes each alias stands for (its anchor's subtree, itself with
    aliases expanded) as it composes; linear in the size of the text."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> nodes its subtree stands for, aliases expanded
        self._expanded = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if not self.check_event(AliasEvent):
            node = super().compose_node(parent, index)
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = node.value
            elif isinstance(node, MappingNode):
                children = [child for pair in node.value for child in pair]
            # A child not sized yet is an alias of an anchor still being composed (a recursive alias): the
            # loader reports those where they matter, and one node is what they stand for here.
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(child), 1) for child in children)
            return node
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        target = super().compose_node(parent, index)
        self._expanded += self._sizes.get(id(target), 1)
        if self._expanded > MAX_ALIAS_NODES:
            problem = (
                f"expand to more than {MAX_ALIAS_NODES} nodes here (nested anchors and '<<' merges multiply)"
            )
            raise _AliasBomb(problem=problem, problem_mark=mark)
        return target


def compose(text: str, source: str) -> Node | None:
    """Parse one YAML document into nodes; syntax errors and alias bombs become a located
    :class:`ConfigErrors`."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_node()
    except _AliasBomb as exc:
        location = _location(exc, source)
        raise ConfigErrors([ConfigError(f"YAML aliases {exc.problem}", location=location)]) from None
    except yaml.MarkedYAMLError as exc:
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigErrors(
            [ConfigError(f"YAML syntax error: {problem}", location=_location(exc, source))]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigErrors([ConfigError(f"YAML error: {exc}", location=Location(source, 1, 1))]) from exc
    except RecursionError as exc:
        raise ConfigErrors([ConfigError("YAML nesting too deep", location=Location(source, 1, 1))]) from exc
    finally:
        loader.dispose()


def _location(exc: MarkedYAMLError, source: str) -> Location | None:
    mark = exc.problem_mark or exc.context_mark
    return Location(source, mark.line + 1, mark.column + 1) if mark is not None else None


def describe(node: Node) -> str:
    """Name a node's type for messages: ``a mapping``, ``a list``, ``an integer`` ..."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _NULL_TAG: "nothing (null)",
        _BOOL_TAG: "a boolean",
        _INT_TAG: "an integer",
        _FLOAT_TAG: "a number",
        _STR_TAG: "a string",
    }.get(node.tag, f"a value tagged {node.tag}")


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def suggest(word: str, choices: Collection[str]) -> str | None:
    """Closest known spelling of ``word`` (case-folded too, so ``Server`` suggests ``server``)."""
    for probe in (word, word.lower()):
        close = difflib.get_close_matches(probe, list(choices), n=1, cutoff=0.6)
        if close:
            return close[0]
    return None


def mapping_items(node: Node, path: str, problems: Problems) -> list[Item] | None:
    """The items of a mapping with ``<<`` merge keys applied; duplicates and non-mappings are reported.

    Explicit keys win over merged ones and, among several merged mappings, the first wins (the YAML merge key
    spec). Duplicate explicit keys are an error: PyYAML would silently keep the last one.
    """
    if is_null(node):
        return []
    if not isinstance(node, MappingNode):
        problems.error(node, path, f"expected a mapping, got {describe(node)}")
        return None
    explicit: dict[str, Item] = {}
    merged: list[Item] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(_merge_sources(value_node, path, problems, {id(node)}))
            continue
        if not isinstance(key_node, ScalarNode) or is_null(key_node):
            problems.error(key_node, path, f"a key must be a plain string, got {describe(key_node)}")
            continue
        key = str(key_node.value)
        if key in explicit:
            first = explicit[key].key_node.start_mark.line + 1
            problems.error(key_node, join(path, key), f"duplicate key (first defined on line {first})")
            continue
        explicit[key] = Item(key, key_node, value_node)
    items = dict(explicit)
    for item in merged:
        items.setdefault(item.key, item)
    return sorted(items.values(), key=lambda i: (i.key_node.start_mark.line, i.key_node.start_mark.column))


def _merge_sources(node: Node, path: str, problems: Problems, seen: set[int]) -> Iterator[Item]:
    sources = node.value if isinstance(node, SequenceNode) else [node]
    for source in sources:
        if not isinstance(source, MappingNode):
            problems.error(source, path, f"a '<<' merge key needs a mapping, got {describe(source)}")
            continue
        if id(source) in seen:  # a recursive alias would merge forever
            problems.error(source, path, "recursive '<<' merge")
            continue
        for key_node, value_node in source.value:
            if key_node.tag == _MERGE_TAG:
                yield from _merge_sources(value_node, path, problems, seen | {id(source)})
            elif isinstance(key_node, ScalarNode) and not is_null(key_node):
                yield Item(str(key_node.value), key_node, value_node)


def sequence_items(node: Node, path: str, problems: Problems) -> list[Node] | None:
    if is_null(node):
        return []
    if not isinstance(node, SequenceNode):
        problems.error(node, path, f"expected a list, got {describe(node)}")
        return None
    return list(node.value)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _construct(node: ScalarNode) -> object:
    # SafeConstructor knows YAML 1.1's ints (0660 octal, 1_000), floats and bools; a fresh one per call keeps
    # no state between files.
    return SafeConstructor().construct_object(node, deep=True)


def as_str(node: Node, path: str, problems: Problems) -> str | None:
    """A string value. Other scalars are taken as written (``0``, ``yes``), as upstream's YAML 1.2 reads them
    into string fields; null means "not set" and returns None, like an absent key."""
    if is_null(node):
        return None
    if not isinstance(node, ScalarNode) or node.tag not in (_STR_TAG, _INT_TAG, _FLOAT_TAG, _BOOL_TAG):
        problems.error(node, path, f"expected a string, got {describe(node)}")
        return None
    return str(node.value)


def as_bool(node: Node, path: str, problems: Problems) -> bool | None:
    if is_null(node):
        return None
    if isinstance(node, ScalarNode):
        if node.tag == _BOOL_TAG:
            return bool(_construct(node))
        if node.tag == _STR_TAG and node.value in _TRUE_WORDS | _FALSE_WORDS:
            return node.value in _TRUE_WORDS
    problems.error(node, path, f"expected true or false, got {describe(node)}")
    return None


def as_int(node: Node, path: str, problems: Problems) -> int | None:
    """An integer; a quoted decimal string is accepted (viper does), a boolean is not (YAML bools are not
    numbers here, even though Python's are)."""
    if is_null(node):
        return None
    if isinstance(node, ScalarNode):
        if node.tag == _INT_TAG:
            try:
                value = _construct(node)
            except (ConstructorError, ValueError):
                value = None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif node.tag == _STR_TAG:
            text = str(node.value).strip()
            if re.fullmatch(r"[+-]?[0-9]+", text):
                return int(text)
            problems.error(node, path, f"expected an integer, got the string {node.value!r}")
            return None
    problems.error(node, path, f"expected an integer, got {describe(node)}")
    return None


def as_scalar(node: Node, path: str, problems: Problems) -> object:
    """An int, float or string for values with their own parser (durations); None for null or a mistake."""
    if is_null(node):
        return None
    if isinstance(node, ScalarNode):
        if node.tag == _STR_TAG:
            return str(node.value)
        if node.tag in (_INT_TAG, _FLOAT_TAG):
            try:
                return _construct(node)
            except (ConstructorError, ValueError):
                pass
    problems.error(node, path, f"expected a value such as 10s, got {describe(node)}")
    return None


def as_choice(
    enum_type: type[E], text: str, node: Node, path: str, problems: Problems, what: str
) -> E | None:
    """The member of ``enum_type`` whose value is ``text`` (already case-folded as the key wants); an unknown
    value is an error listing the choices, with the closest one."""
    try:
        return enum_type(text)
    except ValueError:
        choices = [member.value for member in enum_type]
        problems.error(
            node,
            path,
            f"unknown {what} {getattr(node, 'value', text)!r}: use {', '.join(choices[:-1])} or {choices[-1]}",
            suggest(text, choices),
        )
        return None
