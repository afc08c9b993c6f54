"""WSGI entry point for gunicorn: `gunicorn keel.wsgi:app`."""
from keel import create_app

app = create_app()
