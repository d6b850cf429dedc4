"""How every trustgate service starts: parse and check its settings, then serve or run.

    SERVICE = Service("trustgate-webhook", Command(WebhookSettings, app=create))
    def main(argv=None) -> int:
        return SERVICE.start(argv)

A bad configuration prints `<prog>: <reason>` and exits 2 before anything listens. An HTTP service's
`app(settings)` is called in each gunicorn worker after the fork (watch threads must not cross a
fork); the settings object checked in the master reaches the workers with the fork itself. A loop
service's `run(settings)` returns the exit code. A service with several commands (the agent, the
authority) takes the command name first; options shared by all its commands may come before it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trustgate.settings import ConfigError, ServingSettings, Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass(frozen=True)
class Command:
    """One way to run a service: its settings and either an app factory (HTTP) or a loop."""

    settings: type[Settings]
    app: Callable[[Any], Any] | None = None
    run: Callable[[Any], int] | None = None
    help: str = ""
    server: Mapping[str, Any] = field(default_factory=dict)  # extra gunicorn settings

    def __post_init__(self) -> None:
        if (self.app is None) == (self.run is None):
            raise TypeError("a Command has either an app factory or a run function")
        if self.app is not None and not issubclass(self.settings, ServingSettings):
            raise TypeError("an HTTP service's settings must include ServingSettings")


@dataclass(frozen=True)
class Service:
    prog: str
    command: Command | None = None
    commands: Mapping[str, Command] = field(default_factory=dict)
    shared: type[Settings] | None = None  # options of every command, accepted before the command name
    description: str = ""

    def parse(self, argv: Sequence[str] | None) -> tuple[Command, Settings]:
        """The command and its checked settings; raises `ConfigError`."""
        if self.command is not None:
            return self.command, self.command.settings.parse(argv, self.prog, self.description)
        top = argparse.ArgumentParser(prog=self.prog, description=self.description)
        shared_names: frozenset[str] = frozenset()
        if self.shared is not None:
            self.shared.add_arguments(top)
            shared_names = self.shared.option_names()
        sub = top.add_subparsers(dest="_command", required=True, metavar="COMMAND")
        for name, command in self.commands.items():
            command.settings.add_arguments(sub.add_parser(name, help=command.help), skip=shared_names)
        args = top.parse_args(argv)
        command = self.commands[args._command]
        settings = command.settings.from_namespace(args)
        settings.check()
        return command, settings

    def start(self, argv: Sequence[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        try:
            command, settings = self.parse(argv)
        except ConfigError as error:
            print(f"{self.prog}: {error}", file=sys.stderr)
            return 2
        if command.run is not None:
            return command.run(settings)
        from trustgate.serving.server import serve  # gunicorn only for the services that serve

        assert isinstance(settings, ServingSettings) and command.app is not None
        assert settings.tls_cert is not None and settings.tls_key is not None  # checked above
        app = command.app
        serve(
            lambda: app(settings),
            bind=settings.bind,
            certfile=settings.tls_cert,
            keyfile=settings.tls_key,
            client_ca=settings.client_ca,
            workers=settings.workers,
            threads=settings.threads,
            **command.server,
        )
        return 0
