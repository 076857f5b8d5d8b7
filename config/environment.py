"""What every settings module reads first: the environment (django-environ), the project's
folder, DEBUG and the site's URL. config/settings.py and config/domain_settings.py import
these, so each is read in one place."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# Where the site is served (scheme, host, port), e.g. behind a proxy; blank: wherever a
# request is made to.
SITE_URL = env.str("SITE_URL", default="").rstrip("/")
