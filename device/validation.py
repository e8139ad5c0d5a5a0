"""Typed validation shared by every stage: the strict base model and one-line error messages.

Every config and manifest model derives from `Strict`, so an unknown key is an error that names
the key; `first_error` turns pydantic's error list into the (key, message) of one ``error:`` line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Base for every typed config/manifest: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid", frozen=False)


def first_error(e: ValidationError, root: str = "(root)") -> tuple[str, str]:
    """(dotted key, message) of a pydantic error's first problem, for one-line FaceedgeErrors."""
    err = e.errors()[0]
    return ".".join(str(x) for x in err["loc"]) or root, err["msg"]
