import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "costline.settings")
application = get_wsgi_application()
# The ~100,000 objects made while starting (Django, the apps, plotly) live as long as the process.
# Frozen, Python's full collections skip them: one took 70 ms and came every few Overview requests
# (bench/pages.py: Overview p95 311 → 264 ms at 10 million calls).
gc.freeze()
