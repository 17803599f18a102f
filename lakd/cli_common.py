"""What every `lakd` command shares: the consoles, config loading, one-line errors, common options, progress bars.

Results go to stdout (`console`); errors and progress go to stderr (`err_console`), so `--json` output stays
machine-readable when something fails.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

ConfigOpt = typer.Option("tiny", "--config", "-c", help="YAML config file or a built-in name (tiny, emosynth3).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config value: --set student_optim.lr=1e-3 (repeatable).")
RunDirOpt = typer.Option(None, "--run-dir", help="Where outputs go (overrides run_dir in the config).")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when available) | cpu | cuda | cuda:N.")


def fail(msg: str, code: int = 1):
    """One red line on stderr and exit with `code` (no traceback: the message says what is wrong)."""
    err_console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(code)


def load_cfg(config: str, overrides: list[str] | None, run_dir: Path | None = None):
    """The run config from a file or built-in name, `--set` overrides and `--run-dir`; exit 2 on a config error."""
    from lakd.config import ConfigError, load_config

    try:
        return load_config(config, list(overrides or []) + ([f"run_dir={run_dir}"] if run_dir else []))
    except (ConfigError, FileNotFoundError) as e:
        fail(f"config: {e}", code=2)


class progress_bar:
    """A rich progress bar fed by `advance(done, total)` callbacks of long data steps."""

    def __init__(self, what: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self.bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.bar.add_task(what, total=None)

    def __enter__(self):
        self.bar.start()
        return lambda done, total=None: self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        self.bar.stop()
