"""Safe YAML loading that remembers where every value came from.

The fast path is PyYAML's C composer; we then build plain Python values ourselves so that we
can (a) reject duplicate keys, which PyYAML silently overwrites, (b) remember the 1-based line
of every key and list item, and (c) remember which scalars YAML 1.1 turned into booleans
(``no``, ``on``, ``yes``...) so a type error on them can say why. Validation runs on the
plain values; the positions are only consulted to word the errors.

Pure: takes bytes, returns values and ``Problem``s; never raises on any input.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import pydantic
import yaml

from reconciler.errors import Problem

try:  # the C composer is ~6x faster; fall back when libyaml is absent
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

Path_ = tuple[str | int, ...]

_BOOL_TAG = "tag:yaml.org,2002:bool"
_MAX_NODES = 200_000  # alias expansion ("billion laughs") stops here
MAX_DEPTH = 32  # no state file nests deeper than 5; far below Python's recursion limit


@dataclass(slots=True)
class Positions:
    """Line numbers (1-based) of keys and list items, by key path."""

    lines: dict[Path_, int] = field(default_factory=dict)
    yaml11_bools: dict[Path_, str] = field(default_factory=dict)  # path -> the word written
    # numbers as written (``0644`` reads as 420 in YAML 1.1): hints must quote the source text
    numbers: dict[Path_, str] = field(default_factory=dict)

    def line(self, path: Path_) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (1 at worst)."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 1)


class _Build:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pos = Positions()
        self.problems: list[Problem] = []
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()

    def value(self, node: yaml.Node, at: Path_) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooBig
        if len(at) > MAX_DEPTH:
            raise _TooDeep(node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            try:
                v = self.constructor.construct_object(node, deep=True)
            except (yaml.YAMLError, ValueError, OverflowError, TypeError) as e:
                # Python refuses ints of more than 4300 digits, and datetime refuses
                # impossible dates, with a plain ValueError from inside the constructor
                self.problems.append(
                    Problem(self.path, node.start_mark.line + 1, _unreadable(node, e))
                )
                return None
            if node.tag == _BOOL_TAG and str(node.value).lower() not in ("true", "false"):
                self.pos.yaml11_bools[at] = str(node.value)
            elif isinstance(v, int | float) and not isinstance(v, bool):
                self.pos.numbers[at] = str(node.value)
            return v
        if id(node) in self.active:
            self.problems.append(
                Problem(
                    self.path,
                    node.start_mark.line + 1,
                    "recursive alias: remove the self-reference",
                )
            )
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                out_l: list[Any] = []
                for i, item in enumerate(node.value):
                    self.pos.lines.setdefault((*at, i), item.start_mark.line + 1)
                    out_l.append(self.value(item, (*at, i)))
                return out_l
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, at)
        finally:
            self.active.discard(id(node))
        return None  # pragma: no cover - PyYAML has only three node kinds

    def mapping(self, node: yaml.MappingNode, at: Path_) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        first_line: dict[Any, int] = {}
        for knode, vnode in node.value:
            line = knode.start_mark.line + 1
            if knode.tag == "tag:yaml.org,2002:merge":
                self.problems.append(
                    Problem(
                        self.path, line, "merge keys (<<) are not supported: write the keys out"
                    )
                )
                continue
            key = self.value(knode, (*at, "<key>"))
            if not isinstance(key, str):
                word = knode.value if isinstance(knode, yaml.ScalarNode) else "?"
                hint = (
                    f" (YAML 1.1 reads {word!r} as a boolean): quote it"
                    if isinstance(key, bool)
                    else ": keys must be strings"
                )
                self.problems.append(
                    Problem(self.path, line, f"key {word!r} is not a string{hint}")
                )
                continue
            if key in out:
                self.problems.append(
                    Problem(
                        self.path,
                        line,
                        f"duplicate key {key!r} (first at line {first_line[key]}): remove one",
                    )
                )
                continue
            first_line[key] = line
            self.pos.lines[(*at, key)] = line
            out[key] = self.value(vnode, (*at, key))
        return out


class _TooBig(Exception):
    pass


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _unreadable(node: yaml.ScalarNode, e: BaseException) -> str:
    if node.tag == "tag:yaml.org,2002:int":
        return "integer is too long (Python reads at most 4300 digits): shorten it or quote it"
    if isinstance(e, yaml.YAMLError):
        return f"cannot read value: {_short(e)}"
    return f"cannot read value {str(node.value)[:40]!r} ({_short(e)}): quote it if it is text"


def _short(e: BaseException) -> str:
    problem = getattr(e, "problem", None) or str(e)
    return " ".join(str(problem).split())  # one line per problem


def load_yaml(path: str, data: bytes) -> tuple[Any, Positions, list[Problem]]:
    """Parse one YAML document. Returns (value, positions, problems); never raises."""
    b = _Build(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, b.pos, [Problem(path, 1, f"not UTF-8 text (byte {e.start}): save it as UTF-8")]
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        return None, b.pos, [Problem(path, line, f"YAML syntax error: {_short(e)}")]
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        msg = f"character {e.character!r} is not allowed in YAML: remove it"
        return None, b.pos, [Problem(path, line, msg)]
    except yaml.YAMLError as e:  # pragma: no cover - every YAML error above is marked
        return None, b.pos, [Problem(path, 1, f"YAML error: {_short(e)}")]
    if node is None:
        return None, b.pos, []
    b.pos.lines[()] = node.start_mark.line + 1
    try:
        value = b.value(node, ())
    except _TooDeep as e:
        msg = f"nested deeper than {MAX_DEPTH} levels: flatten it"
        return None, b.pos, [Problem(path, e.line, msg)]
    except (_TooBig, RecursionError):
        return None, b.pos, [Problem(path, 1, "document too large or too deeply nested")]
    return value, b.pos, b.problems


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _kind(v: object) -> str:
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"boolean {str(v).lower()}"
    if isinstance(v, int | float):
        return f"number {v}"
    if isinstance(v, str):
        return f"string {v!r}"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return type(v).__name__


def _fields_at(model: type[pydantic.BaseModel], loc: Path_) -> list[str]:
    """Field names of the model reached by following ``loc`` (for did-you-mean)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, pydantic.BaseModel)
        ):
            continue
        f = _by_key(current).get(part)
        if f is None:
            return []
        current = _model_in(f.annotation)
    if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
        return list(_by_key(current))
    return []


def _by_key(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """Fields by the key written in YAML (the alias when there is one)."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside list[X] / X | None annotations, else the annotation itself."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if isinstance(found, type) and issubclass(found, pydantic.BaseModel):
            return found
    return annotation


def pydantic_problems(
    path: str, err: pydantic.ValidationError, pos: Positions, model: type[pydantic.BaseModel]
) -> list[Problem]:
    """Word pydantic's errors as ``path:line: message`` problems, with fixes where obvious."""
    out: list[Problem] = []
    for e in err.errors(include_url=False):
        loc: Path_ = tuple(p for p in e["loc"] if isinstance(p, str | int))
        # pydantic appends the union/tagged branch name to loc; keep only data keys
        loc = tuple(
            p for p in loc if not (isinstance(p, str) and p.startswith(("function-", "str")))
        )
        typ = e["type"]
        where = ".".join(str(p) for p in loc) or "document"
        line = pos.line(loc)
        if typ == "extra_forbidden":
            key = str(loc[-1]) if loc else "?"
            msg = f"unknown key {key!r}"
            close = difflib.get_close_matches(key, _fields_at(model, loc[:-1]), n=1)
            msg += f" (did you mean {close[0]!r}?)" if close else _known(model, loc[:-1])
        elif typ == "missing":
            msg = f"missing required key {str(loc[-1])!r}" if loc else "missing value"
            line = pos.line(loc[:-1])
        elif typ in _TYPE_WORDS:
            got = e.get("input")
            msg = f"{where}: expected {_TYPE_WORDS[typ]}, got {_kind(got)}"
            if loc in pos.yaml11_bools and typ == "string_type":
                word = pos.yaml11_bools[loc]
                msg += (
                    f' (YAML 1.1 reads {word!r} as a boolean): quote it, e.g. {loc[-1]}: "{word}"'
                )
            elif (
                typ == "string_type" and isinstance(got, int | float) and not isinstance(got, bool)
            ):
                written = pos.numbers.get(loc, str(got))
                if written != str(got):
                    msg += f" (YAML 1.1 reads {written} as {got})"
                msg += f': quote it, e.g. {loc[-1]}: "{written}"'
        elif typ in ("literal_error", "enum"):
            expected = e.get("ctx", {}).get("expected", "")
            msg = f"{where}: {_kind(e.get('input'))} is not allowed; use one of {expected}"
        elif typ == "value_error":
            msg = f"{where}: {e['msg'].removeprefix('Value error, ')}"
        else:
            msg = f"{where}: {e['msg']}"
        # a key may hold any character; a problem stays on one line
        out.append(Problem(path, line, msg.replace("\r", "\\r").replace("\n", "\\n")))
    return out


def _known(model: type[pydantic.BaseModel], loc: Path_) -> str:
    names = _fields_at(model, loc)
    return f"; known keys: {', '.join(names)}" if names else ""
