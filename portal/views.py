import csv
import sys
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .charts import stacked_bars
from .forms import KeyCreateForm, SignupForm
from .middleware import outage_response
from .models import ApiKey, UsageDay
from .outages import log_outage, outage_of
from .selectors import (
    CSV_HEADER,
    csv_row,
    last_days,
    usage_per_day,
    usage_per_day_by,
    usage_rows_for_export,
    usage_summary,
)
from .services import key_create, key_revoke
from .throttles import client_address, count_request, login_locked_until

HOUR = 3600


def too_many_attempts(request, *, heading: str, reason: str, until: datetime, retry_after: int):
    """The `429` page: what was refused, and until when."""
    context = {"heading": heading, "reason": reason, "until": until}
    response = render(request, "registration/too_many_attempts.html", context, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def locked_out(request, original_response=None, credentials=None):
    """django-axes' answer to a login while the username is locked for this client (AXES_LOCKOUT_CALLABLE)."""
    until, retry_after = login_locked_until(request, credentials)
    return too_many_attempts(
        request,
        heading="Too many failed logins",
        reason=(
            f"This account is locked for your connection after {settings.AXES_FAILURE_LIMIT} failed logins. "
            "Until then even the right password is refused."
        ),
        until=until,
        retry_after=retry_after,
    )


@require_http_methods(["GET", "POST"])
def signup(request):
    next_url = safe_next_url(request)
    if request.user.is_authenticated:
        return redirect(next_url or "/")
    if request.method == "POST":
        limit = settings.SIGNUPS_PER_HOUR
        refusal = count_request(request, "signup", limit=limit, window=HOUR)
        if refusal is not None:
            return too_many_attempts(
                request,
                heading="Too many sign-ups",
                reason=f"At most {limit} accounts can be created from one address an hour.",
                until=refusal.until,
                retry_after=refusal.retry_after,
            )
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to Modelport, {user.username}.")
        return redirect(next_url or "/")
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


def safe_next_url(request) -> str:
    """Where to go after signing up: `next` when it is a path on this site, else nothing."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return candidate if candidate and allowed else ""


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset flow; a client may ask for a few mails an hour (each one lands in someone's inbox)."""

    def post(self, request, *args, **kwargs):
        limit = settings.PASSWORD_RESETS_PER_HOUR
        refusal = count_request(request, "password-reset", limit=limit, window=HOUR)
        if refusal is not None:
            return too_many_attempts(
                request,
                heading="Too many password resets",
                reason=f"At most {limit} password-reset mails can be asked for from one address an hour.",
                until=refusal.until,
                retry_after=refusal.retry_after,
            )
        return super().post(request, *args, **kwargs)


def api_error(request, status: int, message: str) -> JsonResponse | None:
    """API errors are JSON even where no view matched: DRF's `{"detail"}` on /api/.

    /v2 formats its own (inference.protocols.oip_errors.V2ErrorMiddleware turns these pages into `{"error"}`).
    """
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    return None


def page_not_found(request, exception=None):
    return api_error(request, 404, "Not found.") or site_not_found_page(request)


# What the apps above this one add to the 404 page, each a function of the request giving template context
# (the catalog registers the models whose name is close to a mistyped one): the portal imports no app above.
NOT_FOUND_CONTEXT: list[Callable[[HttpRequest], dict]] = []


def site_not_found_page(request) -> HttpResponse:
    """The site's own 404 page, with what the apps suggest (e.g. "did you mean")."""
    context = {}
    for provide in NOT_FOUND_CONTEXT:
        context.update(provide(request))
    return render(request, "404.html", context, status=404)


def server_error(request):
    # Django calls this inside its `except` block, so the exception is at hand: an error raised in middleware
    # (sessions, authentication) because a dependency is down is a 503 here, as views' are in the middleware.
    error = sys.exc_info()[1]
    outage = outage_of(error)
    if outage is not None:
        log_outage(outage, error, request.path)
        return outage_response(request, outage)
    return api_error(request, 500, "Server error.") or render(request, "500.html", status=500)


@login_required
@require_http_methods(["GET", "POST"])
def keys(request):
    form = KeyCreateForm(request.POST or None)
    new_key = raw_key = None
    if request.method == "POST" and form.is_valid():
        try:
            new_key, raw_key = key_create(user=request.user, **form.cleaned_data)
        except ValueError as error:
            form.add_error(None, str(error))
        else:
            form = KeyCreateForm()
    context = {
        "form": form,
        "keys": ApiKey.objects.filter(user=request.user),
        "new_key": new_key,
        # Rendered into this one response only; never stored in the session or a message.
        "raw_key": raw_key,
    }
    response = render(request, "portal/keys.html", context)
    if raw_key:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def key_revoke_view(request, key_id: int):
    key = get_object_or_404(ApiKey, pk=key_id, user=request.user)
    key_revoke(key=key)
    messages.success(request, f"Revoked {key.name} ({key.display}). It stops working now.")
    return redirect("keys")


@login_required
def usage(request):
    days = [day.isoformat() for day in last_days(30)]
    context = {
        "summary": usage_summary(request.user),
        "days": usage_per_day(request.user, days=30),
        "chart_by_model": stacked_bars(
            days=days,
            series=usage_per_day_by(request.user, dimension="model"),
            title="Requests per day by model",
        ),
        "chart_by_key": stacked_bars(
            days=days, series=usage_per_day_by(request.user, dimension="key"), title="Requests per day by key"
        ),
    }
    return render(request, "portal/usage.html", context)


def usage_csv_response(queryset, filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(CSV_HEADER)
    for row in usage_rows_for_export(queryset).iterator(chunk_size=1000):
        writer.writerow(csv_row(row))
    return response


@login_required
def usage_export(request):
    return usage_csv_response(
        UsageDay.objects.filter(user=request.user), f"modelport-usage-{request.user}.csv"
    )


@require_GET
def metrics(request):
    """Prometheus text format, summed over every process of the deployment (API.md: Operations endpoints)."""
    from .metrics import metrics_allowed, metrics_text

    if not metrics_allowed(
        authorization=request.headers.get("Authorization", ""), client=client_address(request)
    ):
        if settings.METRICS_TOKEN:
            response = HttpResponse("A metrics token is needed: Authorization: Bearer <token>.\n", status=401)
            response["WWW-Authenticate"] = "Bearer"
            return response
        return HttpResponse(
            "Metrics are served to loopback clients only (or set METRICS_TOKEN).\n", status=403
        )
    body, content_type = metrics_text()
    return HttpResponse(body, content_type=content_type)
