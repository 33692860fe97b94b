"""`clp theory ...` commands."""


def add_parser(groups) -> None:
    groups.add_parser("theory", help="(under construction)")
