"""What every script does alike at its boundary: one-line argument errors, and one place where the
errors a user can cause (`UserError`, and the `OSError`s of files and disks) become a short message
on stderr with exit status 2. Any other exception is a bug: it keeps its traceback."""

import argparse
import math
import sys

from ..errors import UserError

EXIT_ERROR = 2    # bad input, or a fault the user can fix (nothing was written)
EXIT_STOPPED = 3  # stopped by SIGTERM / SIGUSR1: rerun the same command to resume


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors on one line, exit status 2."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def message(e):
    """One line (or a few, for key lists) that names the culprit."""
    if isinstance(e, OSError) and not str(e).startswith("no space left") and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return str(e) or type(e).__name__


def run(main, argv=None):
    """`main(argv)`'s exit status; UserError and OSError (bad input, missing files, full disks)
    become `error: ...` on stderr and status 2."""
    try:
        return main(argv)
    except (UserError, OSError) as e:
        print(f"error: {message(e)}", file=sys.stderr)
        return EXIT_ERROR
    except (MemoryError, RuntimeError) as e:
        if not out_of_memory(e):
            raise
        print(f"error: out of memory ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}): "
              "lower --batch-size (or the sizes you asked for); nothing more was written", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def out_of_memory(e):
    """Whether an exception is the host or the GPU running out of memory (not a bug)."""
    torch = sys.modules.get("torch")
    oom = (getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError) if torch else None
    return isinstance(e, MemoryError) or (oom is not None and isinstance(e, oom)) or \
        (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))


def positive_int(text, most=None):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1 or most is not None and value > most:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1{f' and <= {most:,}' if most else ''}, got {value}")
    return value


def positive_float(text, most=math.inf):
    """A finite number > 0 (a time, a scale), at most `most`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= most):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0{f' and <= {most:g}' if most < math.inf else ''}, "
                                         f"got {text!r}")
    return value


def int_list(text):
    """'2,3,5' -> [2, 3, 5] (non-negative integers)."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected a comma list of integers >= 0, got {text!r}")
    return values
