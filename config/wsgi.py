"""The WSGI entry point (gunicorn config.wsgi). Without DJANGO_SETTINGS_MODULE it runs the
production settings, which refuse to start on demo values: `./dev run` sets the dev ones."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
application = get_wsgi_application()
