import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
application = get_wsgi_application()

# e.g. encrypted model files and no key (or the wrong one): the server does not start, and says why.
from portal.startup import refuse_to_start  # noqa: E402 - needs the app registry loaded above

refuse_to_start()
