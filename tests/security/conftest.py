"""The security tests' own fixtures (none yet: each module keeps those only it uses).

The security tests drive the same real processes as the end-to-end tests (the oidc-provider test
OP, the payment API, the callback, a Temporal dev server and the worker); their fixtures come
from tests.support.stack, a plugin of tests/conftest.py."""
