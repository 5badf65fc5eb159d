import os

import numpy as np
import pytest

import fastconv

ISAS = fastconv.cpu_info()["supported_isas"]


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per kernel path this CPU can execute."""
    with fastconv.use_isa(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_report_header(config):
    info = fastconv.cpu_info()
    return (f"fastconv: cpu={info['cpu']!r} detected={info['detected_isa']} in-use={info['isa']} "
            f"paths tested={ISAS} threads={info['threads']} FASTCONV_ISA={os.environ.get('FASTCONV_ISA', '')!r}")
