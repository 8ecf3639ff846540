import csv

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from .charts import stacked_bars
from .forms import KeyCreateForm, SignupForm
from .models import ApiKey, UsageDay
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


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("/")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to Modelport, {user.username}.")
        return redirect(request.GET.get("next") or "/")
    return render(request, "registration/signup.html", {"form": form})


def api_error(request, status: int, message: str) -> JsonResponse | None:
    """API errors are JSON even where no view matched: DRF's `{"detail"}` on /api/.

    /v2 formats its own (inference.middleware.V2ErrorMiddleware turns these pages into `{"error"}`).
    """
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    return None


def page_not_found(request, exception=None):
    return api_error(request, 404, "Not found.") or render(request, "404.html", status=404)


def server_error(request):
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
