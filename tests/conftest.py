import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tinyfcn

# CI and the README's test command run the same examples every time (a red run is always
# reproducible); `python -m pytest --hypothesis-profile=explore` draws new, more cases.
settings.register_profile("repeatable", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.filter_too_much,
                                                 HealthCheck.too_slow])
settings.register_profile("explore", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.filter_too_much,
                                                 HealthCheck.too_slow])
settings.load_profile("repeatable")

# the settings tinyfcn's own scripts run with (importing tinyfcn does not apply them)
tinyfcn.configure_runtime()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
