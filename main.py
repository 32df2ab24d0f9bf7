"""Linea's entry point: the desktop app by default, the command line with a subcommand.

The offline switches are set before anything can import a Hugging Face library.
"""

import sys

from runtime.offline import enforce_offline

enforce_offline()

CLI_COMMANDS = {"generate", "models", "doctor"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in CLI_COMMANDS:
        from runtime.cli import main as cli_main

        return cli_main(argv)
    if argv and argv[0] == "--smoke-test":
        from app.smoke import run_smoke_test

        return run_smoke_test()
    from app.main import run_app

    return run_app(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
