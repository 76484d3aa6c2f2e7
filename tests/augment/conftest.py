"""Every test of this package runs on one thread (see ``tests.conftest.one_thread``)."""

import pytest

from tests.conftest import one_thread


@pytest.fixture(autouse=True, scope="package")
def single_thread():
    with one_thread():
        yield
