"""The OTLP collector: receivers, decoding and normalisation (no Django import here)."""

import sys

from collector import speedups as _speedups

_speedups.activate(sys.modules[__name__])
