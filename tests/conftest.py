"""Shared fixtures: the fake log service, and a check that fails any test leaking a thread.

Thread leaks are a classic bug of log shippers (docs/hazards.md#thread-leaks), so every test here is
checked: a thread that a test started and that is still alive after the test and all its
function-scoped fixtures have been torn down (plus a short grace period) fails the test.
The fake service's own ``fake-service-*`` threads are NOT exempt: ``stop()`` must join them.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest
from hypothesis import HealthCheck, settings

from tests.service import FakeLogService

pytest_plugins = ["pytester"]

# Property tests judge behaviour, not speed: no per-example deadline, and no health check
# that fails a run because a loaded machine generated the examples slowly.  The suite's runs
# draw the same examples every time (derandomize), so a run is red only for a change; the
# "explore" profile draws new ones, for hunting (LELOG_HYPOTHESIS_PROFILE=explore).
_PROFILE = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("lelog", derandomize=True, **_PROFILE)
settings.register_profile("explore", max_examples=1000, **_PROFILE)
settings.load_profile(os.environ.get("LELOG_HYPOTHESIS_PROFILE", "lelog"))

#: How long a test's threads get to finish after teardown before they count as leaked
#: (overridable for the check's own self-test, which wants its expected failures fast).
#: Generous: on a loaded machine a thread that is ending may wait seconds for a core.
THREAD_LEAK_GRACE = float(os.environ.get("LELOG_TEST_THREAD_GRACE", "10.0"))


def pytest_configure(config: pytest.Config) -> None:
    """Register the opt-out marker so ``--strict-markers`` runs accept it."""
    config.addinivalue_line(
        "markers",
        "allow_thread_leak: skip the leaked-thread check for this test (justify it in a comment)",
    )


def _new_threads(before: set) -> List[threading.Thread]:
    """Alive threads that were not there before (foreign-thread dummies are ignored)."""
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)  # type: ignore[attr-defined]
    ]


@pytest.fixture(autouse=True)
def _thread_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it leaves a new thread alive.

    Autouse function-scoped fixtures are set up before (and so torn down after) the test's
    other function-scoped fixtures, and this one is the first autouse fixture of the
    top-level conftest: its teardown runs once ``service`` & co. have stopped. Higher-scoped
    fixtures are set up before it, so their threads are part of the baseline.
    """
    before = set(threading.enumerate())
    yield
    if request.node.get_closest_marker("allow_thread_leak") is not None:
        return
    deadline = time.monotonic() + THREAD_LEAK_GRACE
    leaked = _new_threads(before)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = _new_threads(before)
    if leaked:
        names = ", ".join(f"{t.name!r} (daemon={t.daemon})" for t in leaked)
        pytest.fail(
            f"test leaked {len(leaked)} thread(s) still alive {THREAD_LEAK_GRACE:g}s after teardown: {names}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def _runtime_dir_of_its_own(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test's processes meet in a runtime directory of their own (``LELOG_RUNTIME_DIR``,
    inherited by the children it starts): streams of two tests whose services happen to get
    the same port never meet, nor does what an earlier run left behind."""
    monkeypatch.setenv("LELOG_RUNTIME_DIR", str(tmp_path_factory.mktemp("runtime")))


def _check_fake_healthy(services: List[FakeLogService]) -> None:
    """Fail loudly if the fake itself crashed while serving (its bug, not the client's)."""
    errors = [repr(exc) for svc in services for exc in svc.errors]
    if errors:
        pytest.fail(f"the fake log service raised internally: {'; '.join(errors)}", pytrace=False)


@pytest.fixture
def service() -> Iterator[FakeLogService]:
    """A started fake log service with default settings, stopped at teardown."""
    svc = FakeLogService().start()
    try:
        yield svc
    finally:
        svc.stop()
    _check_fake_healthy([svc])


@pytest.fixture
def service_factory() -> Iterator[Callable[..., FakeLogService]]:
    """Build started fake services with any FakeLogService keyword arguments; all stopped at teardown."""
    made: List[FakeLogService] = []

    def make(**kwargs: Any) -> FakeLogService:
        svc = FakeLogService(**kwargs).start()
        made.append(svc)
        return svc

    try:
        yield make
    finally:
        for svc in made:
            svc.stop()
    _check_fake_healthy(made)


@pytest.fixture(scope="session")
def tls_ca() -> Any:
    """A throw-away certificate authority (trustme) for TLS and mTLS tests."""
    trustme = pytest.importorskip("trustme")
    return trustme.CA()
