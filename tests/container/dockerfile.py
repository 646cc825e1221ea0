"""Reading a Dockerfile as a builder does, for the checks on `deploy/container/Dockerfile`:
instructions (continuation lines joined, comments dropped), grouped into stages, with the
exec (JSON) and shell forms of their arguments.

Only what those checks need: no variable substitution beyond `expand`, no heredocs.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    """Upper case: `RUN`, `COPY`, ..."""
    arguments: str
    line: int
    """Where it starts (1-based)."""

    def exec_form(self) -> list[str] | None:
        """The arguments as a JSON array of strings, or None in shell form."""
        if not self.arguments.startswith("["):
            return None
        try:
            value = json.loads(self.arguments)
        except ValueError:
            return None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return None
        return value

    def words(self) -> list[str]:
        """The arguments split as a shell would (exec form: the array)."""
        form = self.exec_form()
        return form if form is not None else shlex.split(self.arguments)


@dataclass(frozen=True, slots=True)
class Copy:
    sources: list[str]
    destination: str
    from_stage: str | None


@dataclass(slots=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def copies(self) -> list[Copy]:
        result = []
        for instruction in self.all("COPY"):
            words = instruction.words()
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            from_stage = next((f.partition("=")[2] for f in flags if f.startswith("--from=")), None)
            result.append(Copy(paths[:-1], paths[-1], from_stage))
        return result

    def env(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """The environment after this stage's ENV instructions, starting from `inherited`
        (the base image's): `$NAME` and `${NAME}` expanded as the builder does."""
        env = dict(inherited)
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.arguments)
            if words and "=" not in words[0]:  # legacy `ENV NAME value`
                env[words[0]] = expand(" ".join(words[1:]), env)
                continue
            updates = {}
            for word in words:
                name, _, value = word.partition("=")
                updates[name] = expand(value, env)
            env.update(updates)
        return env

    def labels(self) -> dict[str, str]:
        labels = {}
        for instruction in self.all("LABEL"):
            for word in shlex.split(instruction.arguments):
                name, _, value = word.partition("=")
                labels[name] = value
        return labels


@dataclass(frozen=True, slots=True)
class Dockerfile:
    global_args: dict[str, str | None]
    """ARG instructions before the first FROM: name → default."""
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand(value: str, env: Mapping[str, str]) -> str:
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)


def instructions(text: str) -> list[Instruction]:
    result = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (and parser directives) go, also inside continuations
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = joined.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip(), start))
    return result


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for instruction in instructions(path.read_text(encoding="utf-8")):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {instruction.line}: only ARG may come before FROM")
            name, equals, default = instruction.arguments.partition("=")
            global_args[name.strip()] = default.strip() if equals else None
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(global_args, stages)
