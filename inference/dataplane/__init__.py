"""The prediction data plane: one asyncio process per host in front of Django (`python manage.py dataplane`).

uvicorn (uvloop, httptools) parses HTTP; the calls that run a model (`portal.logs.PREDICT_ROUTES`, from a
program: no cookie) go to the data plane's endpoints (`endpoints.py`): `/v2/…/infer` answered on the event
loop (`oip.py`), `/api/v1/…/predict` by its DRF view called directly in a thread (`rest.py`), both without
Django's handler and middleware, whose effects on their answers the endpoints add. Everything else goes to the
site's own WSGI application (`portal.wsgi`) unchanged, in threads (`bridge.py`).

Measured on the MLP, `/v2` JSON at 16 callers (2 cores): gunicorn + Django 675 req/s, uvicorn with Django's
whole handler 775, with a lean Django handler 1,017 on one run, and the event-loop endpoint 1,051 next to
BentoML's 1,061 on another (the README's "How it runs"; the closing notes of issue 23).
"""
