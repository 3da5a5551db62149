"""A forget-set entry as given: the one type the admin API, the tools and the store share."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EntryIn:
    """``text`` may be left out for a TOFU-style entry: it is then ``question + answer``.

    The text fields are the sensitive data: they are kept out of reprs (and so out of logs)."""

    text: str | None = field(default=None, repr=False)
    question: str | None = field(default=None, repr=False)
    answer: str | None = field(default=None, repr=False)
    aliases: list[str] = field(default_factory=list, repr=False)
    tags: list[str] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)
