"""How onboarding shows its progress: an observer told about each step, and a rich console implementation that
prints one line per step with its time (prefixed with the client when several onboard in parallel).
"""
from __future__ import annotations

import threading
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape


class OnboardingObserver(Protocol):
    def begin(self, client: str, total: int, resumed: bool) -> None: ...
    def step_skipped(self, client: str, index: int, total: int, name: str, title: str) -> None: ...
    def step_started(self, client: str, index: int, total: int, name: str, title: str) -> None: ...
    def step_done(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                  detail: dict[str, Any]) -> None: ...
    def step_failed(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                    error: BaseException) -> None: ...
    def end(self, client: str, seconds: float, ok: bool, message: str) -> None: ...


class SilentObserver:
    def begin(self, client: str, total: int, resumed: bool) -> None: pass
    def step_skipped(self, client: str, index: int, total: int, name: str, title: str) -> None: pass
    def step_started(self, client: str, index: int, total: int, name: str, title: str) -> None: pass
    def step_done(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                  detail: dict[str, Any]) -> None: pass
    def step_failed(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                    error: BaseException) -> None: pass
    def end(self, client: str, seconds: float, ok: bool, message: str) -> None: pass


class ConsoleObserver:
    """One line per finished step: `[3/10] create Kafka topics ... 0.21 s  8 topics (8 created, ...)`."""

    def __init__(self, console: Console | None = None, prefix_client: bool = False):
        self.console = console or Console()
        self.prefix_client = prefix_client
        self._lock = threading.Lock()  # parallel onboardings share the console

    def _print(self, client: str, text: str) -> None:
        prefix = f"[bold]{escape(client)}[/] " if self.prefix_client else ""
        with self._lock:
            self.console.print(prefix + text, highlight=False)

    def begin(self, client: str, total: int, resumed: bool) -> None:
        how = "resuming onboarding of" if resumed else "onboarding"
        self._print(client, f"{how} [bold]{escape(client)}[/] ({total} steps)")

    def step_skipped(self, client: str, index: int, total: int, name: str, title: str) -> None:
        self._print(client, f"  [dim][{index}/{total}] {title:<38} done earlier[/]")

    def step_started(self, client: str, index: int, total: int, name: str, title: str) -> None:
        pass  # the finished line carries the time; a started line per step would double the output

    def step_done(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                  detail: dict[str, Any]) -> None:
        summary = escape(str(detail.get("summary", "")))
        self._print(client, f"  [green]✓[/] [{index}/{total}] {title:<38} {seconds:7.2f} s  {summary}")

    def step_failed(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                    error: BaseException) -> None:
        self._print(client, f"  [red]✗[/] [{index}/{total}] {title:<38} {seconds:7.2f} s  "
                            f"[red]{escape(type(error).__name__)}: {escape(str(error))}[/]")

    def end(self, client: str, seconds: float, ok: bool, message: str) -> None:
        colour = "green" if ok else "red"
        self._print(client, f"[{colour}]{escape(message)}[/] — total {seconds:.2f} s")
