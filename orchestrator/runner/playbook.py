"""Playbooks: the ordered steps of a stage, as YAML a release manager can read.

```yaml
name: fastdowntime
description: ...
steps:
  - action: stop_scripts
    timeout_s: 30
```

Loading validates every step against the registry of built-in actions:
an unknown action, an unknown parameter or a wrong type is bad input (exit 2)
naming the file and the line.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from orchestrator.errors import BadInput
from orchestrator.runner.actions import ACTIONS, Action

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"
"""The built-in playbooks: in a checkout ``orchestrator/playbooks`` links to the top-level
``playbooks/`` (their source, which users read and change); a wheel carries copies."""


@dataclass(frozen=True)
class Step:
    """One step: its action (with parameters) and where it was written."""

    action: Action
    line: int

    @property
    def name(self) -> str:
        return self.action.name


@dataclass(frozen=True)
class Playbook:
    """A named, ordered list of steps loaded from ``path``."""

    name: str
    description: str
    steps: tuple[Step, ...]
    path: Path
    text: str = dataclasses.field(default="", repr=False, compare=False)
    """The YAML it was parsed from (a run keeps a copy beside its journal, from which resume
    rebuilds these very steps)."""


def playbook_path(name_or_path: str) -> Path:
    """``fastdowntime`` -> ``playbooks/fastdowntime.yaml``; a path stays a path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    return PLAYBOOKS / f"{name_or_path}.yaml"


def load_playbook(name_or_path: str, *, ordered: bool = True) -> Playbook:
    """Load and validate a playbook; BadInput names the file and the line of any problem
    (``ordered``: see :func:`parse_playbook`)."""
    path = playbook_path(name_or_path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the playbook: {exc}") from None
    return parse_playbook(text, path, ordered=ordered)


def parse_playbook(text: str, path: Path, *, ordered: bool = True) -> Playbook:
    """The playbook ``text`` (read from ``path``), validated; BadInput names the file and
    the line of any problem. ``ordered=False`` skips the check that each step's needs came
    before it (resume rebuilds the playbook a run has already run)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise BadInput(f"{path}: not valid YAML: {exc}") from None

    def fail(node: yaml.Node | None, problem: str) -> BadInput:
        line = node.start_mark.line + 1 if node is not None else 1
        return BadInput(f"{path} line {line}: {problem}")

    if not isinstance(root, yaml.MappingNode):
        raise fail(root, "a playbook is a mapping with name, description and steps")
    top = {key.value: value for key, value in root.value}
    for key, _ in root.value:
        if key.value not in ("name", "description", "steps"):
            raise fail(key, f"unknown key {key.value!r} (known: name, description, steps)")
    steps_node = top.get("steps")
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise fail(steps_node or root, "steps must be a non-empty list")
    steps: list[Step] = []
    in_effect: list[str] = []  # the steps so far, less those a later step ended
    for node in steps_node.value:
        if not isinstance(node, yaml.MappingNode):
            raise fail(node, "a step is a mapping with an action and its parameters")
        fields = {key.value: (key, value) for key, value in node.value}
        if "action" not in fields:
            raise fail(node, "the step has no action")
        name = fields.pop("action")[1].value
        if name not in ACTIONS:
            raise fail(node, f"unknown action {name!r} (known: {', '.join(sorted(ACTIONS))})")
        cls = ACTIONS[name]
        params = _params(cls, fields, fail)
        for needed, why in cls.needs if ordered else ():
            if needed not in in_effect:
                raise fail(node, f"action {name!r} needs {needed!r} in an earlier step, "
                                 f"not ended since: {why}")
        steps.append(Step(cls(params), node.start_mark.line + 1))
        in_effect = [*(n for n in in_effect if n not in cls.ends), name]
    name_node = top.get("name")
    return Playbook(name_node.value if name_node is not None else path.stem,
                    getattr(top.get("description"), "value", ""), tuple(steps), path, text)


def _params(cls: type[Action], fields: dict[str, tuple[yaml.Node, yaml.Node]],
            fail: Any) -> Any:
    params_cls = cls.Params
    hints = get_type_hints(params_cls)
    known = {f.name for f in dataclasses.fields(params_cls)}
    values = {}
    for key, (key_node, value_node) in fields.items():
        if key not in known:
            raise fail(key_node, f"action {cls.name!r} has no parameter {key!r} "
                                 f"(known: {', '.join(sorted(known)) or 'none'})")
        value = yaml.safe_load(yaml.serialize(value_node))
        values[key] = _typed(hints[key], value, lambda p, n=value_node, k=key:
                             fail(n, f"{cls.name}.{k}: {p}"))
    return params_cls(**values)


def _typed(hint: Any, value: Any, fail: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = [a for a in args if a is not type(None)][0]
        origin, args = get_origin(hint), get_args(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise fail(f"must be a list, not {value!r}")
        return tuple(_typed(args[0], v, fail) for v in value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise fail("must not be negative")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise fail(f"must be {getattr(hint, '__name__', hint)}, not {value!r}")
