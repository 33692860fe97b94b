"""`clp train`, `clp eval`, `clp reproduce` commands (clp_min)."""


def add_parsers(groups) -> None:
    pass
