"""The scripts' error boundary: what a user caused is one line and exit 2; a bug keeps its traceback."""

import pytest
import torch

from deepcache_ref.errors import CheckpointError, ConfigError, UserError
from deepcache_ref.runs.cli import EXIT_ERROR, run


def _raising(error):
    def main(argv):
        raise error
    return main


@pytest.mark.parametrize("error", [UserError("bad --eta"), ConfigError("bad key"), CheckpointError("bad file"),
                                   FileNotFoundError(2, "No such file or directory", "x.npz")])
def test_user_errors_are_one_line_and_exit_2(error, capsys):
    assert run(_raising(error)) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("bug", [ValueError("Expected 4D input (got 3D input)"), TypeError("x"), KeyError("k")])
def test_a_bug_keeps_its_traceback(bug):
    with pytest.raises(type(bug)):  # raised through: Python prints the traceback
        run(_raising(bug))


def test_every_library_error_class_is_a_user_error_and_a_value_error():
    assert issubclass(ConfigError, UserError) and issubclass(CheckpointError, UserError)
    assert issubclass(UserError, ValueError)  # `except ValueError` in research code still catches them


@pytest.mark.parametrize("oom", [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:117] "
                                                             "DefaultCPUAllocator: can't allocate memory: you tried "
                                                             "to allocate 81920000000 bytes"),
                                 getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)(
                                     "CUDA out of memory. Tried to allocate 20.00 GiB")])
def test_running_out_of_memory_is_one_line_naming_the_batch_size(oom, capsys):
    def main(argv):
        raise oom

    assert run(main) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "--batch-size" in err and len(err.splitlines()) == 1


def test_other_runtime_errors_keep_their_traceback():
    def main(argv):
        raise RuntimeError("shape mismatch in a matmul: a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run(main)
