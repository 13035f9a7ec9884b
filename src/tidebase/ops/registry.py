"""The workflow registry: names that workers may execute, bound to the functions that implement them.

`@tide.workflow("research-agent")` registers a function under a name; a worker claims only runs of registered names
and calls the function as `workflow(run, input)`, from the run's checkpoints. The registry is plain data, shared by
the sync and the async API; it does no I/O and decides nothing about which run executes where.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tidebase.core.rules import check_name
from tidebase.errors import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Workflow name -> function. Registering a name twice with another function is a ConfigurationError."""

    def __init__(self) -> None:
        self._workflows: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, fn: Callable[..., Any]) -> None:
        """Binds `name` to `fn`; re-registering the same function is a no-op."""
        check_name(name, "workflow name")
        existing = self._workflows.get(name)
        if existing is not None and existing is not fn:
            raise ConfigurationError(f"workflow {name!r} is already registered to {existing!r}")
        self._workflows[name] = fn

    def decorator(self, name: str) -> Callable[[F], F]:
        """`@tide.workflow(name)`: registers the decorated function and returns it unchanged."""

        def wrap(fn: F) -> F:
            self.register(name, fn)
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., Any] | None:
        """The function registered under `name`, or None."""
        return self._workflows.get(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._workflows)

    def __contains__(self, name: object) -> bool:
        return name in self._workflows

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._workflows)
