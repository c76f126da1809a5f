"""`aero-relay serve | check-config | version` (and `python -m aero_relay`).

`aero-relay serve` accepts the original binary's flags exactly (`--listen-addr 127.0.0.1:PORT`,
`-mode=prod`, ...), so it is a drop-in for `aero-webrtc-udp-relay`; with no subcommand, flags are
taken as `serve` flags, like the original. Exit codes follow F-002: 0 on a clean shutdown or
`--help`, 2 on a configuration error, 1 when the listener cannot be opened or the server fails.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

import trio

from aero_relay import __version__
from aero_relay.buildinfo import load_build_info
from aero_relay.config import Config, ConfigError, HelpRequested, effective_items, load, usage
from aero_relay.observability.logging import StructLogger, configure_logging, get_logger

__all__ = ["main"]

_COMMANDS = ("serve", "check-config", "version", "help")
_HELP_FLAGS = ("-h", "--h", "-help", "--help")  # Go's flag package accepts all four

_TOP_USAGE = """usage: aero-relay [serve|check-config|version] [flags]

  serve          run the relay (the default when the first argument is a flag)
  check-config   validate the configuration and print the effective values (secrets redacted)
  version        print the version and build metadata
"""
_SEE_FLAGS = "\nRun `aero-relay serve --help` for every flag and its environment variable.\n"


def _load_or_exit(env: Mapping[str, str], argv: Sequence[str], prog: str) -> Config | int:
    try:
        return load(env, argv)
    except HelpRequested:
        sys.stdout.write(usage(prog))
        return 0
    except ConfigError as err:
        sys.stderr.write(f"{err}\n")
        return 2


def _serve(cfg: Config) -> int:
    configure_logging(cfg.log_format, cfg.log_level)
    log = get_logger("aero_relay")
    try:
        # Both verify, at import/install, the private internals their hooks rely on (F-002).
        from aero_relay.server import RelayServer
        from aero_relay.transports import ws_hooks

        ws_hooks.install()
    except RuntimeError as err:
        log.error("failed to configure webrtc", err=str(err))
        return 2
    if cfg.workers > 1:
        return _serve_workers(cfg, log)
    server = RelayServer(cfg, handle_signals=True)
    try:
        trio.run(server.run)
    except BaseException as exc:  # map every outcome (incl. KeyboardInterrupt) to an exit code
        return exit_code_for(exc, log)
    return 0


def _serve_workers(cfg: Config, log: StructLogger) -> int:
    # The parent binds once and forks the workers before any Trio loop exists (aero_relay.workers).
    from aero_relay.server import ListenError, bind_listener
    from aero_relay.workers import run_workers

    try:
        sockets = bind_listener(cfg)
    except ListenError:
        return 1  # already logged as "failed to listen"
    bound = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in sockets.insecure_sockets)
    return run_workers(cfg, sockets, bound)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def exit_code_for(exc: BaseException, log: StructLogger) -> int:
    """The exit code for how `trio.run(server.run)` ended (F-002)."""
    from aero_relay.server import ListenError

    leaves = _leaves(exc)
    if any(isinstance(e, ListenError) for e in leaves):
        return 1  # already logged as "failed to listen"
    if all(isinstance(e, KeyboardInterrupt) for e in leaves):
        return 0
    log.error("http server exited", err="; ".join(repr(e) for e in leaves))
    return 1


def _check_config(cfg: Config) -> int:
    for name, value in effective_items(cfg):
        sys.stdout.write(f"{name}={value}\n")
    if cfg.ice.error:
        sys.stdout.write(f"# warning: ICE server config is invalid (readyz will be 503): {cfg.ice.error}\n")
    return 0


def _version() -> int:
    info = load_build_info()
    commit, built = info.commit or "-", info.build_time or "-"
    sys.stdout.write(f"aero-relay {__version__} commit={commit} buildTime={built}\n")
    return 0


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ: Mapping[str, str] = os.environ if env is None else env
    command = "serve"
    if args and not args[0].startswith("-"):
        command = args.pop(0)
    elif args and args[0] in _HELP_FLAGS:
        # Bare `aero-relay --help`: the subcommands, then every serve flag (F-001: exit 0).
        sys.stdout.write(_TOP_USAGE + "\n" + usage("aero-relay [serve]"))
        return 0
    if command not in _COMMANDS:
        sys.stderr.write(f"unknown command {command!r}\n{_TOP_USAGE}{_SEE_FLAGS}")
        return 2
    if command == "help":
        sys.stdout.write(_TOP_USAGE + _SEE_FLAGS)
        return 0
    if command == "version":
        return _version()
    loaded = _load_or_exit(environ, args, f"aero-relay {command}")
    if isinstance(loaded, int):
        return loaded
    if command == "check-config":
        return _check_config(loaded)
    return _serve(loaded)


def entrypoint() -> None:
    sys.exit(main())
