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
            parts = [str(part) for part in problem["loc"]]
            if not parts or parts[0] not in sections:
                parts.insert(0, main)
            lines.append(f"  {'.'.join(parts)}: {problem['msg']} (got {problem.get('input')!r})")
        raise error_type(f"{source} is invalid:\n" + "\n".join(lines)) from None
