"""The public surface: every exported name exists; the error tree is one tree."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import critpath
import critpath.errors
import critpath.orchestrator

# Every module of the package, found by walking it: a new module cannot be forgotten.
MODULES = [
    "critpath",
    *sorted(
        m.name for m in pkgutil.walk_packages(critpath.__path__, "critpath.") if "._" not in m.name
    ),
]


@pytest.mark.parametrize("module", MODULES)
def test_every_name_in_all_exists(module: str) -> None:
    mod = importlib.import_module(module)
    names = mod.__all__
    assert len(names) == len(set(names)), "duplicate names in __all__"
    missing = [n for n in names if not hasattr(mod, n)]
    assert missing == []


@pytest.mark.parametrize("module", MODULES)
def test_every_module_says_what_it_is_for(module: str) -> None:
    doc = importlib.import_module(module).__doc__
    assert doc
    assert doc.strip()


def test_top_level_reexports_are_the_same_objects() -> None:
    for name in critpath.orchestrator.__all__:
        if name in critpath.__all__:
            assert getattr(critpath, name) is getattr(critpath.orchestrator, name)
    for name in critpath.errors.__all__:
        if name in critpath.__all__:
            assert getattr(critpath, name) is getattr(critpath.errors, name)
    assert isinstance(critpath.__version__, str)


def test_every_error_descends_from_the_root() -> None:
    errors = [getattr(critpath.errors, n) for n in critpath.errors.__all__ if n != "is_retryable"]
    for exc in errors:
        assert issubclass(exc, critpath.CritpathError)
    run_errors = [
        critpath.MissingInputError,
        critpath.StepFailedError,
        critpath.RouteError,
        critpath.DeadlineExceeded,
        critpath.RunCancelled,
    ]
    for exc in run_errors:
        assert issubclass(exc, critpath.RunError)
    assert issubclass(critpath.DeadlineExceeded, TimeoutError)


def test_retryability_is_decided_by_type() -> None:
    class Flaky(critpath.RetryableError):
        pass

    assert critpath.errors.is_retryable(Flaky())
    assert not critpath.errors.is_retryable(ValueError())
    assert not critpath.errors.is_retryable(critpath.ConfigError("x"))


def test_retry_policy_options_are_checked() -> None:
    with pytest.raises(critpath.ConfigError):
        critpath.RetryPolicy(attempts=0)
    with pytest.raises(critpath.ConfigError):
        critpath.RetryPolicy(initial=-1)
