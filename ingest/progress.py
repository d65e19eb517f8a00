"""The CLI's progress bar over files and audio-seconds, and the closing summary."""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn)

from ingest.pipeline import Report

console = Console(stderr=True)


class CliProgress:
    def __init__(self):
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[audio]:.0f} audio-s"), TimeElapsedColumn(),
                             console=console, transient=False)
        self._task = None

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def hook(self, event: str, info: dict) -> None:
        if event == "start":
            self._task = self._bar.add_task("ingest", total=info["files"], audio=0.0)
        elif event == "file" and self._task is not None:
            audio = self._bar.tasks[0].fields["audio"] + (info.get("audio_s") or 0.0)
            self._bar.update(self._task, advance=1, audio=audio)
            if info["status"] == "failed":
                self._bar.console.print(f"[red]failed[/] {info['path']}: {info['error']}")


def print_summary(report: Report) -> None:
    hours = report.audio_s / 3600
    speed = f" · {report.audio_s / report.wall_s:.1f}× real time" if report.audio_s else ""
    console.print(f"ok {len(report.ok)} · failed {len(report.failed)} · skipped "
                  f"{len(report.skipped)} (already stored) · {hours:.3f} audio h · "
                  f"{report.wall_s:.1f} s wall{speed}")
    for path, reason in report.failed:
        console.print(f"  [red]✗[/] {path}: {reason}")
    if not report.audio_s:
        return  # nothing was analysed, so there are no stage times to show
    t = report.timings
    total = sum(t.values()) or 1.0
    # Stage times are per stage; decode and VAD of the next file overlap the model, so they
    # can add up to more than the wall time.
    console.print("stage time: " + " · ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)"
                                         for k, v in t.items()))
