"""The one error class of onebyone: bad input, with a message that names what was expected and what was
got (with the shapes). The checks that raise it are in ``checks``."""


class OneByOneError(ValueError):
    """Bad input to onebyone: the message names what was expected and what was got."""


def too_large(error: BaseException, what: str) -> OneByOneError | None:
    """A OneByOneError saying how much memory ``what`` would need, for an allocator's error (torch's "you
    tried to allocate N bytes", or a MemoryError); None for any other error.

    >>> str(too_large(RuntimeError("... you tried to allocate 1228800000000000 bytes. Error code 12"), "a batch"))
    'a batch needs 1.23 PB for one tensor, more memory than this machine could allocate'
    """
    import re

    found = re.search(r"allocate (\d+) bytes", str(error))
    if found is None and not isinstance(error, MemoryError):
        return None
    size = "more memory than this machine has" if found is None else _bytes(int(found[1])) + " for one tensor"
    return OneByOneError(f"{what} needs {size}, more memory than this machine could allocate")


def reason(error: BaseException, most: int = 200) -> str:
    """``error`` in one line, for a report: its type and the first line of its message that says something
    (a heading ending in ":", as OpenVINO's "Exception from src/...:", joined with the line after).

    >>> reason(RuntimeError("Exception from src/inference/src/cpp/core.cpp:117:\\n[ GENERAL_ERROR ] no kernel"))
    'RuntimeError: Exception from src/inference/src/cpp/core.cpp:117: [ GENERAL_ERROR ] no kernel'
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(error).__name__}: {said[:most]}"


MAX_BYTES = 16 * 2**30  # one array larger than this is refused before it is allocated (our machines: 24 GiB)


def check_size(n_bytes: int, what: str) -> None:
    """Refuse, before allocating, an array of more than ``MAX_BYTES``: a OneByOneError naming its size."""
    if n_bytes > MAX_BYTES:
        raise OneByOneError(f"{what} needs {_bytes(int(n_bytes))} for one array, more than the {_bytes(MAX_BYTES)} "
                            "that onebyone allocates at once")


def _bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
