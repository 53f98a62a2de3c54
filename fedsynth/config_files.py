"""Reading the project's TOML files into typed objects, with errors that name the field.

Shared by the public schema, the site config and the federation config, so that every file
a custodian or coordinator edits fails the same way: the file, the dotted field, the
problem, the value given.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_toml(path: str | Path, error_type: type[Exception], what: str) -> dict[str, Any]:
    """Parse ``path``; a missing file or bad syntax raises ``error_type`` naming ``what`` and the fix."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error_type(f"{what} not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error_type(f"{path}: not valid TOML ({exc}); fix the syntax at that line") from None


def validate_sections(
    model: type[ModelT],
    data: dict[str, Any],
    *,
    main: str,
    sections: tuple[str, ...],
    error_type: type[Exception],
    source: str,
) -> ModelT:
    """Validate a TOML document whose ``[main]`` table holds the model's own fields and whose
    other tables (``sections``) are nested fields; every problem is reported as
    ``section.field: message (got value)``."""
    unknown = set(data) - {main, *sections}
    if unknown:
        raise error_type(f"{source}: unknown section(s) {sorted(unknown)}; allowed: {', '.join((main, *sections))}")
    flat = dict(data.get(main, {}))
    flat.update({section: data[section] for section in sections if section in data})
    try:
        return model.model_validate(flat)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            loc = [str(part) for part in problem["loc"]]
            parts = loc if loc and loc[0] in sections else [main, *loc]
            line = f"  {'.'.join(parts)}: {problem['msg']} (got {problem.get('input')!r})"
            known = _known_keys(model, loc[:-1]) if problem["type"] == "extra_forbidden" else None
            if known and not loc[:-1]:  # the main table's keys, not its sections
                known = [key for key in known if key not in sections]
            if known:  # a misspelt key: say which ones the table takes
                line += f"; known keys in [{'.'.join(parts[:-1])}]: {', '.join(known)}"
            if problem["type"] == "missing":  # e.g. a file written before the key existed
                line += f"; fix: add {parts[-1]} = <value> to [{'.'.join(parts[:-1])}]"
            lines.append(line)
        raise error_type(f"{source} is invalid:\n" + "\n".join(lines)) from None


def _known_keys(model: type[BaseModel], path: list[str]) -> list[str] | None:
    """The keys (aliases where set) the table at ``path`` inside ``model`` takes; None if not a model."""
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return sorted(field.alias or name for name, field in model.model_fields.items())
