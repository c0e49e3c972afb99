"""The security tests drive the same real processes as the end-to-end tests: the oidc-provider
test OP, the payment API, the callback, a Temporal dev server and the worker."""

from __future__ import annotations

from tests.e2e.conftest import *  # noqa: F403  (the e2e fixtures, shared rather than copied)
from tests.e2e.conftest import _no_faults_left  # noqa: F401  (autouse: clears the OP's planned faults)
