"""The CLI's progress bar — files, audio hours, × real time, the busiest stage — and the
closing summary."""
from __future__ import annotations

import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn)

from ingest.report import Report

console = Console(stderr=True)


class CliProgress:
    def __init__(self):
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[hours]:.2f} audio h"),
                             TextColumn("{task.fields[speed]:.0f}× real time"),
                             TextColumn("{task.fields[stage]}"), TimeElapsedColumn(),
                             console=console, transient=False)
        self._task = None
        self._audio = 0.0
        self._started = time.perf_counter()

    def __enter__(self):
        self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)

    def hook(self, event: str, info: dict) -> None:
        if event == "start":
            self._started = time.perf_counter()
            what = f"ingest ({info['executor']}, {info['workers']} prepare)"
            self._task = self._bar.add_task(what, total=info["files"], hours=0.0, speed=0.0,
                                            stage="")
        elif event == "file" and self._task is not None:
            self._audio += info.get("audio_s") or 0.0
            speed = self._audio / max(time.perf_counter() - self._started, 1e-9)
            self._bar.update(self._task, advance=1, hours=self._audio / 3600, speed=speed)
            if info["status"] == "failed":
                self._bar.console.print(f"[red]failed[/] {escape(info['path'])}: "
                                        f"{escape(info['error'] or '')}", highlight=False, soft_wrap=True)
            elif info.get("note"):
                self._bar.console.print(f"[yellow]flagged[/] {escape(info['path'])}: "
                                        f"{escape(info['note'])}",
                                        highlight=False, soft_wrap=True)
        elif event == "busy" and self._task is not None and info:
            stage = max(info, key=info.get)
            self._bar.update(self._task, stage=f"bottleneck: {stage} {100 * info[stage]:.0f}%")
        elif event == "waiting":
            self._bar.console.print(f"[yellow]waiting[/] the database has been locked by "
                                    f"another process for {info['seconds']:.0f} s", soft_wrap=True)


def print_summary(report: Report) -> None:
    hours = report.audio_s / 3600
    speed = f" · {report.audio_s / report.wall_s:.1f}× real time" if report.audio_s else ""
    console.print(f"ok {len(report.ok)} · failed {len(report.failed)} · skipped "
                  f"{len(report.skipped)} (already stored) · {hours:.3f} audio h · "
                  f"{report.wall_s:.1f} s wall{speed}", highlight=False, soft_wrap=True)
    for path, reason in report.failed:
        console.print(f"  [red]✗[/] {escape(path)}: {escape(reason)}", highlight=False, soft_wrap=True)
    for path, note in report.flagged:
        console.print(f"  [yellow]![/] {escape(path)}: {escape(note)}", highlight=False, soft_wrap=True)
    if report.interrupted:
        console.print("[yellow]interrupted[/]: what was committed is kept; run again to finish "
                      "(stored files are skipped)")
    if not report.audio_s:
        return  # nothing was analysed, so there are no stage times to show
    t = report.timings
    total = sum(t.values()) or 1.0
    # Stages overlap (prepare runs beside the model), so they can add up to more than the wall.
    console.print("stage time: " + " · ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)"
                                         for k, v in t.items()), highlight=False, soft_wrap=True)
    if report.busy:
        console.print("busy: " + " · ".join(f"{k} {100 * v:.0f}%" for k, v in
                                            report.busy.items()), highlight=False, soft_wrap=True)
