"""User-facing errors: the CLI prints them on one line and exits with code 2."""


class UsageError(Exception):
    """A user's mistake (bad flag, missing file, malformed row, unreachable endpoint)."""


class MissingDependency(UsageError):
    def __init__(self, module: str, pip: str):
        super().__init__(f"{module} is not installed: pip install {pip}")
