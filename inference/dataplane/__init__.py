"""The prediction data plane: one asyncio process per host in front of Django (`python manage.py dataplane`).

uvicorn (uvloop, httptools) parses HTTP; the calls that run a model (`portal.logs.PREDICT_ROUTES`, from a
program: no cookie) go to `handlers.PredictionHandler`, which runs the same views as the site with only the
middleware a prediction needs (`settings.DATA_PLANE_MIDDLEWARE`) and the route resolved once per path;
everything else goes to the site's own WSGI application (`portal.wsgi`) unchanged. Both run in threads
(`bridge.py`), since a prediction's view waits on its runner's answer.

Measured on the MLP, `/v2` JSON at 16 callers (2 cores): gunicorn + Django 675 req/s, uvicorn with Django's
whole handler 775, with the prediction handler 1,017 (see the README's "How it runs").
"""
