"""The `diamond` command. Wiring only: each subcommand parses options and calls a stage's library code."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    help="Diamond: churn risk and customer value from CRM history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Bundled and synthetic histories; validate a history folder.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

console = Console(stderr=True)
out = Console()


@contextmanager
def _user_errors() -> Iterator[None]:
    """Known bad input becomes a clear message and exit code 2, never a traceback."""
    from features.config import ConfigError
    from features.history import HistoryError

    try:
        yield
    except (HistoryError, ConfigError, FileExistsError, FileNotFoundError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


@contextmanager
def _progress(total: int | None, label: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over named stages (total None: count unknown); yields `advance(stage_name)`."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=total)

        def advance(stage: str) -> None:
            bar.update(task, advance=1, description=f"{label}: {stage}")

        yield advance
        bar.update(task, total=total or bar.tasks[0].completed, description=f"{label}: done")
        bar.update(task, completed=bar.tasks[0].total)


def _parse_time(value: str | None) -> datetime | None:
    from features.config import parse_as_of

    return parse_as_of(value, "--as-of")


def _print_summary(summary: dict[str, Any], title: str) -> None:
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        shown = (
            f"{value:,}"
            if isinstance(value, int)
            else f"{value:,.2f}"
            if isinstance(value, float)
            else str(value)
        )
        table.add_row(key, shown)
    out.print(table)


@app.callback()
def main() -> None:
    """Diamond: churn risk and customer value from CRM history."""


@data_app.command("cdnow")
def data_cdnow(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the history into.")],
    overwrite: Annotated[bool, typer.Option(help="Replace the folder if it exists.")] = False,
) -> None:
    """Write the bundled CDNOW history (real data, 23,570 customers) as a history folder."""
    from features.datasets import cdnow

    with _user_errors():
        path = cdnow.write(out_dir, overwrite=overwrite)
    out.print(f"CDNOW history written to {path}")


@data_app.command("synthetic")
def data_synthetic(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the history into.")],
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same history.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace the folder if it exists.")] = False,
) -> None:
    """Write a synthetic history with all four tables and each customer's true churn time (truth.parquet)."""
    from features.datasets import synthetic

    with _user_errors(), _progress(None, "synthetic") as advance:
        counts = synthetic.write(out_dir, customers, seed, progress=advance, overwrite=overwrite)
    out.print(
        f"synthetic history written to {out_dir}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    )


@data_app.command("validate")
def data_validate(
    folder: Annotated[Path, typer.Argument(help="History folder.")],
    config: Annotated[
        Path | None, typer.Option(help="Dataset config (default: FOLDER/dataset.yaml).")
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Declared as-of date; later events are invalid.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load and validate a history folder; print its summary, or every problem found."""
    from features.config import DatasetConfig
    from features.history import load_history

    with _user_errors():
        cfg = DatasetConfig.from_yaml(config) if config else None
        history = load_history(folder, cfg, _parse_time(as_of))
    summary = history.summary()
    if as_json:
        out.print_json(json.dumps(summary, default=str))
        return
    _print_summary(summary, f"history {folder}")
    for problem in history.report.dropped:
        console.print(f"[yellow]dropped:[/] {problem}", highlight=False)
    for table, columns in history.report.ignored_columns.items():
        console.print(f"[yellow]ignored:[/] {table}: columns not in the contract: {', '.join(columns)}")


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo's results.")] = Path(
        "demo-output"
    ),
) -> None:
    """Run the whole product end to end on the bundled CDNOW data and say where the results are."""
    from features.datasets import cdnow
    from features.history import load_history

    steps = ["write CDNOW history", "load and validate", "summarise"]
    with _user_errors(), _progress(len(steps), "demo") as advance:
        history_dir = cdnow.write(out_dir / "cdnow", overwrite=True)
        advance(steps[0])
        history = load_history(history_dir)
        advance(steps[1])
        summary = history.summary()
        summary_file = out_dir / "summary.json"
        summary_file.write_text(json.dumps(summary, default=str, indent=2) + "\n", encoding="utf-8")
        advance(steps[2])
    _print_summary(summary, "CDNOW history")
    out.print("\nResults:")
    out.print(f"  history folder : {history_dir.resolve()}")
    out.print(f"  summary        : {summary_file.resolve()}")
