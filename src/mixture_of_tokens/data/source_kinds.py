"""What every text source answers for itself (the `DataSource` protocol), and the defaults most sources share.

A source is written either as a name ("packaged") or as a prefix and an argument ("text:PATH"); its `form` says
which, and the registry in sources.py keys it by that form. `argument` below is the text after the first ':' as the
user wrote it ("" for a source written as a plain name).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .documents import SplitDocuments

if TYPE_CHECKING:
    from .streaming import StreamSource

__all__ = ["DataSource", "SourceDefaults", "hashed_slug", "takes_argument", "source_prefix"]


@runtime_checkable
class DataSource(Protocol):
    """One kind of text source: how it is written and described, identified, cached and read."""

    form: str
    """How a user writes it: "packaged", "packaged+brown", "text:PATH", "hf:NAME[:CONFIG]"."""
    help: str
    """One line for --help, the prepare command's list of sources and errors naming the choices."""
    streaming: bool
    """Read once by prepare_data up to a token budget (`stream`), instead of whole into memory (`splits`)."""
    text_column: bool
    """Reads its text from the column --text-column names (hf: datasets)."""

    def fingerprint(self, argument: str) -> str:
        """Cheap identity of the content (pinned hashes, or file paths, sizes and mtimes) for cache invalidation."""
        ...

    def slug(self, argument: str) -> str:
        """The directory name of its cache under the cache root."""
        ...

    def splits(self, argument: str, cache_dir: Path | None) -> SplitDocuments:
        """Both splits with what was skipped (sources read into memory)."""
        ...

    def stream(self, argument: str) -> StreamSource:
        """How HF datasets opens it (streaming sources)."""
        ...


def source_prefix(form: str) -> str:
    """The part before ':' ("text" of "text:PATH"); the whole form for a source written as a name."""
    return form.partition(":")[0]


def takes_argument(form: str) -> bool:
    """Whether a source is written with an argument after a ':' ("text:PATH") rather than as a name."""
    return ":" in form


def hashed_slug(prefix: str, name: str, key: str) -> str:
    """'<prefix>-<last part of name, made safe, at most 40 characters>-<10 hex digits of sha256(key)>'."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name)[:40] or prefix
    return f"{prefix}-{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


class SourceDefaults:
    """Defaults for a source: read into memory, no text column, cached under its name ("packaged+brown" ->
    "packaged-brown") or, when it takes an argument, under `hashed_slug` of the whole source string."""

    form = ""
    help = ""
    streaming = False
    text_column = False

    def slug(self, argument: str) -> str:
        if not takes_argument(self.form):
            return self.form.replace("+", "-")
        prefix = source_prefix(self.form)
        return hashed_slug(prefix, argument, f"{prefix}:{argument}")

    def splits(self, argument: str, cache_dir: Path | None) -> SplitDocuments:
        raise ValueError(f"{self.form} is a streaming source: read it through prepare_data (mot data prepare).")

    def stream(self, argument: str) -> StreamSource:
        raise ValueError(f"{self.form} is read into memory, not streamed: read it with load_splits.")
