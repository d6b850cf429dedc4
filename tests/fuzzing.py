"""How hard the fuzz targets try: TRUSTGATE_FUZZ_EXAMPLES examples each (default 10,000; a long run is a
bigger value)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("TRUSTGATE_FUZZ_EXAMPLES", "10000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
