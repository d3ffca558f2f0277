"""The `workbench` command's entry point: hand a build to the build server before importing anything else.

Kept apart from workbench.cli (argparse, pathlib, ...) so that a build the server runs costs only this
module and workbench.client in the CLI process.
"""

from __future__ import annotations

import sys


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["build"]:
        from workbench import client

        if client.enabled():
            code = client.run_via_server(argv)
            if code is not None:
                client.exit_now(code)
    from workbench.cli import main as cli_main

    return cli_main(argv, via_server=True)


if __name__ == "__main__":
    sys.exit(main())
