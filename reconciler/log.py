"""structlog configuration, done once per process.

JSON lines when stderr is not a terminal (agents under systemd, CI), a readable console
renderer otherwise. Context (node, commit, pass id) is bound with
``structlog.contextvars.bound_contextvars`` so it follows each asyncio task.
"""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure(level: str = "info", *, json: bool | None = None, colors: bool | None = None) -> None:
    """Configure structlog for this process; later calls are no-ops."""
    global _configured
    if _configured:
        return
    _configured = True
    as_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty() if colors is None else colors)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get(name: str = "swarmkeeper") -> structlog.typing.FilteringBoundLogger:
    """A logger; configure() is applied lazily with defaults if nobody called it."""
    configure()
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
