"""Framework adapters: ``meshware.integrations.flask``, ``.starlette`` (FastAPI too), ``.gunicorn``.

Each adapter only introspects the app's routes and hooks the app's start and stop into
:class:`meshware._member.Member`; no routing logic lives here. The core never imports them.
"""
