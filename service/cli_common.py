"""What every `nudge` sub-command needs before it starts: the settings and the segment book,
or a clear error on stderr and exit code 2 (a configuration mistake, not a failed run)."""

from __future__ import annotations

import typer
from rich.console import Console

from bot.core.segments import SegmentBook, SegmentConfigError, load_segment_book
from service.settings import Settings, SettingsError

err = Console(stderr=True)


def settings_or_exit() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        err.print(f"[red]settings:[/red] {error}")
        raise typer.Exit(2) from None


def segment_book_or_exit(settings: Settings) -> SegmentBook:
    try:
        return load_segment_book(settings.policies_dir / "segments.yml")
    except SegmentConfigError as error:
        err.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
