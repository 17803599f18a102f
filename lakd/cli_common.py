"""What every `lakd` command shares: the consoles, config loading, one-line errors, common options, progress bars.

Results go to stdout (`console`); errors and progress go to stderr (`err_console`), so `--json` output stays
machine-readable when something fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

ConfigOpt = typer.Option("tiny", "--config", "-c", help="YAML config file or a built-in name (tiny, emosynth3).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a config value: --set student_optim.lr=1e-3 (repeatable).")
RunDirOpt = typer.Option(None, "--run-dir", help="Where outputs go (overrides run_dir in the config).")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when available) | cpu | cuda | cuda:N.")
RestartOpt = typer.Option(
    False,
    "--restart",
    help="If a run's result-affecting config changed since it started, delete its checkpoints and start it "
    "afresh (default: refuse and show the changes). An unchanged run resumes as usual.",
)
ResumeChangedOpt = typer.Option(
    False,
    "--resume-changed",
    help="If a run's result-affecting config changed since it started, continue it from its checkpoint with "
    "the new settings anyway (a finished run stays finished).",
)


def fail(msg: str, code: int = 1):
    """One red line on stderr and exit with `code` (no traceback: the message says what is wrong). The message is
    printed as is: `teachers[en]` is not rich markup."""
    from rich.markup import escape

    err_console.print(f"[red]error:[/red] {escape(msg)}")
    raise typer.Exit(code)


def load_cfg(
    config: str,
    overrides: list[str] | None,
    run_dir: Path | None = None,
    restart: bool = False,
    resume_changed: bool = False,
):
    """The run config from a file or built-in name, `--set` overrides, `--run-dir` and `--restart` /
    `--resume-changed` (config key on_config_change); exit 2 on a config error."""
    from lakd.config import ConfigError, load_config

    if restart and resume_changed:
        fail("--restart and --resume-changed exclude each other: start a changed run afresh, or continue it", code=2)
    extra = [f"run_dir={run_dir}"] if run_dir else []
    if restart or resume_changed:
        extra.append(f"on_config_change={'restart' if restart else 'resume'}")
    try:
        return load_config(config, list(overrides or []) + extra)
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


def one_line_errors(command):
    """Decorate a command that runs work (training, caching, launching) so that the faults a user can act on
    end as one line and a meaningful exit code instead of a traceback:

    * preempted (SIGTERM/SIGUSR1; the checkpoint is written): exit 75 (EXIT_PREEMPTED), "rerun to resume";
    * a config problem, including a config that changed since the run started: exit 2;
    * a run directory in use by another run, a corrupted checkpoint, a full disk (naming the file), data lakd
      cannot find (a shard its index.json lists, gone from the disk; lakd's messages name the file): exit 1.
    """
    import functools

    @functools.wraps(command)
    def guarded(*args, **kwargs):
        from lakd.checksums import ChecksumError
        from lakd.config import ConfigError
        from lakd.run_lock import RunDirBusy
        from lakd.train.preemption import Preempted

        try:
            return command(*args, **kwargs)
        except Preempted as e:
            from rich.markup import escape

            err_console.print(f"[yellow]stopped:[/yellow] {escape(str(e))}; rerun the same command to resume")
            raise typer.Exit(e.exit_code) from None
        except ConfigError as e:
            fail(f"config: {e}", code=2)
        except (RunDirBusy, ChecksumError) as e:
            fail(str(e))
        except OSError as e:
            from lakd.io import disk_full_error

            if disk_full_error(e, "") is None:
                if isinstance(e, FileNotFoundError) and e.errno is None:
                    fail(str(e))  # lakd's own (a shard index.json lists, gone from the disk): names it, says what to do
                raise
            where = f": {e.filename}" if e.filename else ""
            fail(
                f"no space left on device{where}; free some space and rerun (training resumes from its last checkpoint)"
            )
        except Exception as e:
            ser = sys.modules.get("lakd.models.ser")  # not imported: the error cannot be one of its CheckpointErrors
            if ser is not None and isinstance(e, ser.CheckpointError):
                fail(str(e))
            raise

    return guarded
