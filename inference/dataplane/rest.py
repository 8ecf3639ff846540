"""`/api/v1/…/predict` from a program, answered by its DRF view called directly in a thread: DRF's own
authentication, parsing, errors and rendering, without Django's handler, middleware and the WSGI bridge around
them (what the middleware adds to a prediction's answer, `endpoints.py` adds)."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest
from django.http import JsonResponse

from portal import throttles

from ..protocols.oip import Answer
from .bridge import PreReadBody, wsgi_environ
from .endpoints import Endpoint, Exchange, answer_of, database_request_ended


class PredictEndpoint(Endpoint):
    protocol = "v1"

    def too_large(self) -> Answer:
        message = f"The request body is over the limit of {self.body_limit} bytes."
        return answer_of(JsonResponse({"detail": message}, status=413))

    async def answer(self, exchange: Exchange, route, body: bytes) -> Answer:
        request = WSGIRequest(wsgi_environ(exchange.scope, PreReadBody(body)))
        request.user = AnonymousUser()  # until the key says who it is
        request.resolver_match = route
        answer = await exchange.in_thread(self._respond, request, route)
        user = request.user
        exchange.user = user if user.is_authenticated else None
        return answer

    @staticmethod
    def _respond(request: WSGIRequest, route) -> Answer:
        throttles.current_request.set(request)
        try:
            try:
                response = route.func(request, *route.args, **route.kwargs)
                if hasattr(response, "render"):
                    response = response.render()
            except Exception as exc:  # noqa: BLE001 - as Django's handler answers what escapes a view
                response = response_for_exception(request, exc)
            return answer_of(response)
        finally:
            database_request_ended()
