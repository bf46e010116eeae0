"""A plugin that fails at import (a missing dependency), as kp-fake-broken 2.0."""

import kp_this_dependency_is_not_installed  # noqa: F401
