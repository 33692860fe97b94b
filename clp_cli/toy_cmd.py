"""`clp toy ...` commands."""


def add_parser(groups) -> None:
    groups.add_parser("toy", help="(under construction)")
