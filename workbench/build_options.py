"""The command-line options of every command that builds or reads a build (build, tui, debug, check, inspect),
defined once."""

from __future__ import annotations

import argparse

ROOT_HELP = "state directory (default: /var/lib/workbench for root, else $XDG_DATA_HOME/workbench)"


def add_build_arguments(p: argparse.ArgumentParser, *, target_help: str = "the stage to build", session: bool = False,
                        devices: bool = False, outputs: bool = False, no_cache: bool = False, build_args: bool = True,
                        root_help: str = ROOT_HELP) -> None:
    """CONTEXT, -f, --target, --build-arg and --root; with `session` --secret, --ssh and --allow, with `devices`
    --cdi-spec-dir and --config, with `outputs` -o, with `no_cache` --no-cache and --no-cache-filter."""
    p.add_argument("context", nargs="?", default=".", help="the build context directory (default: .)")
    p.add_argument("-f", "--file", dest="dockerfile", help="the Dockerfile (default: CONTEXT/Dockerfile)")
    if build_args:
        p.add_argument("--target", help=target_help)
        p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE", help="set a build argument")
    if outputs:
        p.add_argument("-o", "--output", action="append", default=[], metavar="SPEC",
                       help="type=image,name=REF[,push=true] | type=oci|docker|tar,dest=FILE.tar | "
                            "type=local,dest=DIR | DIR")
    if no_cache:
        p.add_argument("--no-cache", action="store_true", help="do not use the cache")
        p.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE",
                       help="do not use the cache for the RUN, COPY and ADD steps of these stages (repeat, or "
                            "separate with commas)")
    p.add_argument("--root", help=root_help)
    if session:
        p.add_argument("--secret", action="append", default=[], metavar="id=ID[,src=FILE|,env=VAR]",
                       help="expose a secret to RUN --mount=type=secret")
        p.add_argument("--ssh", action="append", default=[], metavar="default|ID[=SOCKET]",
                       help="forward an ssh agent to RUN --mount=type=ssh")
        p.add_argument("--allow", action="append", default=[], metavar="ENTITLEMENT",
                       help="grant security.insecure, network.host or device[=NAME]")
    if devices:
        add_device_arguments(p)


def no_cache_filter(args: argparse.Namespace) -> tuple[str, ...]:
    """The stages `--no-cache-filter` names (each flag one name or several with commas)."""
    return tuple(n.strip() for value in args.no_cache_filter for n in value.split(",") if n.strip())


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """--cdi-spec-dir and --config: where the CDI devices that builds may request are described."""
    p.add_argument("--cdi-spec-dir", action="append", default=[], metavar="DIR",
                   help="a CDI spec dir (repeatable; replaces the config's specDirs)")
    p.add_argument("--config", metavar="FILE",
                   help="config file (default: $WORKBENCH_CONFIG, else /etc/workbench/workbench.toml)")
