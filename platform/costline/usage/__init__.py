"""Usage: the LLM call record, prices, rollups and the query layer for metrics."""

import sys

from collector.speedups import activate as _activate

_activate(sys.modules[__name__])
