"""Server-rendered catalog pages: home, browse, model page, upload, edit."""

from __future__ import annotations

import difflib
import json
from functools import wraps
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from portal.middleware import declared_body_length
from portal.models import ApiKey

from . import optimizing, services
from .cards import card_summary, render_card
from .filters import ModelFilterSet, facet_options, filters_to_drop
from .forms import ModelEditForm, ModelUploadForm, VersionUploadForm
from .models import AccessRequest, Format, Model, ModelVersion, Visibility
from .optimization import METHODS, optimization_summary
from .pagination import CatalogPaginator
from .selectors import (
    access_requests_of,
    access_requests_pending_for_owner,
    access_requests_visible_to,
    editable_model_or_404,
    latest_ready_version,
    listed_models,
    may_run,
    versions_visible_to,
    visible_model_or_404,
)
from .snippets import KEY_VARIABLE, code_snippets, named_example

BROWSE_PAGE_SIZE = 20


def home(request):
    public = listed_models(None)
    # "Most used" holds only models someone ran or downloaded, so on a new site it does not repeat "Newest".
    used = public.filter(Q(runs__gt=0) | Q(downloads__gt=0))
    return render(
        request,
        "marketplace/home.html",
        {
            "most_used": with_summaries(used.order_by("-runs", "-downloads", "-id")[:6]),
            "newest": with_summaries(public.order_by("-created_at", "-id")[:6]),
            # A member who has no key yet is shown the way from the browser to their own code.
            "first_steps": request.user.is_authenticated
            and not ApiKey.objects.filter(user=request.user).exists(),
        },
    )


def with_summaries(models) -> list[Model]:
    """The models, each with `summary`: its card's first line, for the catalog's tiles."""
    models = list(models)
    for model in models:
        model.summary = card_summary(model.description)
    return models


def browse(request):
    listed = listed_models(request.user)
    filterset = ModelFilterSet(request.GET, queryset=listed, request=request)
    # Page numbers stop at MODEL_BROWSE_MAX_ROWS (a deeper OFFSET gets slow); the page says so, and a number
    # past the last page shows the last one.
    paginator = CatalogPaginator(filterset.qs, BROWSE_PAGE_SIZE, max_rows=settings.MODEL_BROWSE_MAX_ROWS)
    page = paginator.get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "marketplace/browse.html",
        {
            "filterset": filterset,
            "page": page,
            "models": with_summaries(page),
            "query": query.urlencode(),
            "facets": facet_options(request.GET, listed),
            "drops": filters_to_drop(request.GET) if not page.paginator.count else [],
        },
    )


def model_detail(request, owner: str, name: str):
    model = visible_model_or_404(request.user, owner=owner, name=name)
    return render_model_page(request, model)


def render_model_page(request, model: Model, *, status: int = 200):
    editable = model.is_editable_by(request.user)
    versions = list(versions_visible_to(request.user, model))
    for version in versions:
        # For the versions table: the optimization's sentence, and whether the owner may optimize this one.
        version.optimization_summary = optimization_summary(version.optimization)
        version.optimizable = (
            editable
            and version.status == ModelVersion.Status.READY
            and version.format == Format.ONNX
            and version.derived_from_id is None
        )
    latest = latest_ready_version(model)
    signature = latest.signature if latest else {}
    base_url = request.build_absolute_uri(reverse("home")).rstrip("/")
    try_it = {
        "model": model.slug,
        "version": latest.number if latest else None,
        "signature": json.dumps(signature),
        "task": model.task,
        "labels": json.dumps(model.labels),
        "preprocessing": json.dumps(model.preprocessing),
        "example": json.dumps(named_example(latest)),
        # Text models (a tokenizer with the version): the widget takes words, prefilled with the example's.
        "text": "true" if latest and latest.tokenizer else "false",
        "example_text": json.dumps((latest.example_text if latest else None) or []),
        "authenticated": "true" if request.user.is_authenticated else "false",
        "login_url": f"{reverse('login')}?{urlencode({'next': model.get_absolute_url()})}",
    }
    return render(
        request,
        "marketplace/model_detail.html",
        {
            "model": model,
            "card": render_card(model.description),
            "versions": versions,
            "latest": latest,
            "signature": signature,
            "snippets": code_snippets(model=model, version=latest, base_url=base_url) if latest else [],
            "key_variable": KEY_VARIABLE,
            "try_it": try_it,
            "editable": editable,
            "optimization_methods": METHODS,
            # Versions being optimized: the page follows them (version-progress.js) until they are done.
            "pending_versions": any(
                v.status == ModelVersion.Status.VALIDATING and v.derived_from_id for v in versions
            ),
            **gate_context(request.user, model, editable=editable),
        },
        status=status,
    )


def near_models(request) -> list[Model]:
    """For a 404 at /models/<owner>/<name>/: the visible models whose slug is close to the one asked for."""
    parts = request.path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "models":
        return []
    owner, name = parts[1], parts[2]
    listed = listed_models(request.user)
    candidates = {m.slug: m for m in listed.filter(owner__username=owner)[:NEAR_MODELS_SCANNED]}
    candidates.update({m.slug: m for m in listed.filter(name__iexact=name)[:NEAR_MODELS_SCANNED]})
    close = difflib.get_close_matches(f"{owner}/{name}", list(candidates), n=3, cutoff=0.6)
    return [candidates[slug] for slug in close]


NEAR_MODELS_SCANNED = 2000


@login_required
def model_settings(request, owner: str, name: str):
    model = editable_model_or_404(request.user, owner=owner, name=name)
    return render_settings_page(request, model)


def render_settings_page(request, model: Model, *, version_form=None, edit_form=None, status: int = 200):
    """The owner's settings of a model: a new version, the card and details, visibility, delete."""
    return render(
        request,
        "marketplace/model_settings.html",
        {
            "model": model,
            "editable": True,
            "version_form": version_form or VersionUploadForm(),
            "edit_form": edit_form or ModelEditForm(instance=model),
        },
        status=status,
    )


def gate_context(user, model: Model, *, editable: bool) -> dict:
    """What the page shows of a gated model: the owner's requests to answer, or the visitor's own request."""
    if not model.gated:
        return {"gated": False}
    requests = list(access_requests_visible_to(user, model))
    return {
        "gated": True,
        "may_run": may_run(user, model_id=model.pk, owner_id=model.owner_id, gated=True),
        "access_requests": requests if editable else [],
        "my_access_request": None if editable else next(iter(requests), None),
    }


def tokenizer_store(file, *, task: str) -> services.StoredFile | None:
    if not file:
        return None
    services.check_tokenizer_task(task=task)
    try:
        return services.store_tokenizer(file=file)
    except services.UnsupportedTokenizer as exc:
        raise services.UnsupportedTokenizer(f"The tokenizer is not usable: {exc}") from exc


def streams_model_uploads(view):
    """The model file streams into storage while the body is read (`services.streamed_uploads`).

    The CSRF middleware would read the body before the view, with the default handlers: the check is made
    here instead, once the handler is in place (as Django's documentation on upload handlers shows)."""
    protected = csrf_protect(view)

    @csrf_exempt
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if request.method != "POST":
            return protected(request, *args, **kwargs)
        with services.streamed_uploads(request):
            return protected(request, *args, **kwargs)

    return wrapped


def too_large(request, template: str, context: dict, error: services.UploadTooLarge):
    context["error"] = str(error)
    return render(request, template, context, status=413)


@login_required
@streams_model_uploads
def model_upload(request):
    limit = services.effective_upload_limit_for(request.user)
    if request.method != "POST":
        return render(
            request, "marketplace/upload.html", {"form": ModelUploadForm(owner=request.user), "limit": limit}
        )
    try:
        services.check_upload_size(
            size=declared_body_length(request), limit=limit, framing=services.MULTIPART_ALLOWANCE
        )
    except services.UploadTooLarge as exc:
        context = {"form": ModelUploadForm(owner=request.user), "limit": limit}
        return too_large(request, "marketplace/upload.html", context, exc)
    try:
        form = ModelUploadForm(request.POST, request.FILES, owner=request.user)
        services.refuse_stopped_upload(request)
    except services.UploadTooLarge as exc:
        context = {"form": ModelUploadForm(owner=request.user), "limit": limit}
        return too_large(request, "marketplace/upload.html", context, exc)
    context = {"form": form, "limit": limit}
    if not form.is_valid():
        return render(request, "marketplace/upload.html", context, status=400)
    data = form.cleaned_data
    tokenizer = None
    try:
        tokenizer = tokenizer_store(data.get("tokenizer"), task=data["task"])
        stored = services.store_upload(file=data["file"], limit=limit)
        version = services.model_create_from_upload(
            owner=request.user, data=data, stored=stored, tokenizer=tokenizer
        )
    except services.TokenizerNotForTask as exc:
        form.add_error("tokenizer", str(exc))
        return render(request, "marketplace/upload.html", context, status=400)
    except services.UploadTooLarge as exc:
        services.discard_stored_tokenizer(tokenizer.name if tokenizer else "")
        return too_large(request, "marketplace/upload.html", context, exc)
    except services.UnsupportedModelFile as exc:
        services.discard_stored_tokenizer(tokenizer.name if tokenizer else "")
        context["error"] = str(exc)
        return render(request, "marketplace/upload.html", context, status=415)
    except services.ModelNameTaken as exc:
        form.add_error("name", str(exc))
        return render(request, "marketplace/upload.html", context, status=400)
    except services.PrivateModelLimitReached as exc:
        form.add_error("visibility", str(exc))
        return render(request, "marketplace/upload.html", context, status=400)
    version = services.version_publish(version=version)
    if version.status == ModelVersion.Status.REJECTED:
        context["error"] = version.reason
        return render(request, "marketplace/upload.html", context, status=415)
    if version.status == ModelVersion.Status.READY:
        messages.success(request, f"{version.model.slug} is ready.")
    else:
        messages.info(request, "The file is still being validated; this page will show the result.")
    return HttpResponseRedirect(version.model.get_absolute_url())


@login_required
@require_POST
@streams_model_uploads
def version_upload(request, owner: str, name: str):
    model = editable_model_or_404(request.user, owner=owner, name=name)
    limit = services.effective_upload_limit_for(request.user)
    try:
        services.check_upload_size(
            size=declared_body_length(request), limit=limit, framing=services.MULTIPART_ALLOWANCE
        )
    except services.UploadTooLarge as exc:
        form = VersionUploadForm()
        form.add_error(None, str(exc))
        return render_settings_page(request, model, version_form=form, status=413)
    try:
        form = VersionUploadForm(request.POST, request.FILES)
        services.refuse_stopped_upload(request)
    except services.UploadTooLarge as exc:
        form = VersionUploadForm()
        form.add_error(None, str(exc))
        return render_settings_page(request, model, version_form=form, status=413)
    if not form.is_valid():
        return render_settings_page(request, model, version_form=form, status=400)
    try:
        tokenizer = tokenizer_store(form.cleaned_data.get("tokenizer"), task=model.task)
    except services.TokenizerNotForTask as exc:
        form.add_error("tokenizer", str(exc))
        return render_settings_page(request, model, version_form=form, status=400)
    except services.UploadTooLarge as exc:
        form.add_error("tokenizer", str(exc))
        return render_settings_page(request, model, version_form=form, status=413)
    except services.UnsupportedModelFile as exc:
        form.add_error("tokenizer", str(exc))
        return render_settings_page(request, model, version_form=form, status=415)
    try:
        stored = services.store_upload(file=form.cleaned_data["file"], limit=limit)
    except services.UploadTooLarge as exc:
        services.discard_stored_tokenizer(tokenizer.name if tokenizer else "")
        form.add_error("file", str(exc))
        return render_settings_page(request, model, version_form=form, status=413)
    except services.UnsupportedModelFile as exc:
        services.discard_stored_tokenizer(tokenizer.name if tokenizer else "")
        form.add_error("file", str(exc))
        return render_settings_page(request, model, version_form=form, status=415)
    version = services.version_create(
        model=model,
        stored=stored,
        notes=form.cleaned_data["notes"],
        signature_hint=form.cleaned_data["signature"] or None,
        example=form.cleaned_data["example"],
        tokenizer=tokenizer,
    )
    version = services.version_publish(version=version)
    if version.status == ModelVersion.Status.REJECTED:
        form.add_error("file", f"Version {version.number} was rejected: {version.reason}")
        return render_settings_page(request, model, version_form=form, status=415)
    if version.status == ModelVersion.Status.READY:
        messages.success(request, f"Version {version.number} is ready.")
    else:
        messages.info(request, f"Version {version.number} is still being validated.")
    return HttpResponseRedirect(model.get_absolute_url())


@login_required
@require_POST
def version_optimize(request, owner: str, name: str, number: int):
    """The model page's Optimize button: start the job, then the page follows the new version's status."""
    model = editable_model_or_404(request.user, owner=owner, name=name)
    source = model.versions.filter(number=number).first()
    if source is None:
        raise Http404("No such version.")
    method = request.POST.get("method") or METHODS[0]
    if method not in METHODS:
        messages.error(request, f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
        return render_model_page(request, model, status=400)
    try:
        version = optimizing.version_optimize(source=source, method=method)
    except optimizing.NotOptimizable as exc:
        messages.error(request, str(exc))
        return render_model_page(request, model, status=415)
    except optimizing.VersionNotReady as exc:
        messages.error(request, str(exc))
        return render_model_page(request, model, status=409)
    messages.info(
        request,
        f"Version {version.number} is being made from version {source.number} ({method}); "
        "its row shows the progress.",
    )
    return HttpResponseRedirect(f"{model.get_absolute_url()}#versions")


@login_required
@require_POST
def model_edit(request, owner: str, name: str):
    model = editable_model_or_404(request.user, owner=owner, name=name)
    form = ModelEditForm(request.POST, instance=model)
    if not form.is_valid():
        return render_settings_page(request, model, edit_form=form, status=400)
    try:
        services.model_update(model=model, **form.cleaned_data)
    except services.PrivateModelLimitReached as exc:
        form.add_error("visibility" if "visibility" in form.fields else None, str(exc))
        return render_settings_page(request, model, edit_form=form, status=400)
    messages.success(request, "Saved.")
    return HttpResponseRedirect(model.get_absolute_url())


@login_required
@require_POST
def model_toggle_visibility(request, owner: str, name: str):
    model = editable_model_or_404(request.user, owner=owner, name=name)
    visibility = Visibility.PRIVATE if model.visibility == Visibility.PUBLIC else Visibility.PUBLIC
    try:
        services.model_update(model=model, visibility=visibility)
    except services.PrivateModelLimitReached as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{model.slug} is now {visibility}.")
    return HttpResponseRedirect(reverse("model-settings", kwargs={"owner": owner, "name": name}))


@login_required
@require_POST
def model_delete(request, owner: str, name: str):
    model = editable_model_or_404(request.user, owner=owner, name=name)
    slug = model.slug
    services.model_delete(model=model)
    messages.success(request, f"Deleted {slug}.")
    return HttpResponseRedirect(reverse("browse"))


# --- gated models: access requests --------------------------------------------------------------------------


@login_required
@require_POST
def access_request_submit(request, owner: str, name: str):
    model = visible_model_or_404(request.user, owner=owner, name=name)
    try:
        services.access_request_create(
            model=model, user=request.user, reason=request.POST.get("reason", "").strip()[:2000]
        )
    except services.AccessRequestRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Access to {model.slug} requested; its owner will answer.")
    return HttpResponseRedirect(model.get_absolute_url())


@login_required
@require_POST
def access_request_decide(request, owner: str, name: str, id: int, decision: str):
    if decision not in ("approve", "deny"):
        raise Http404("No such decision.")
    model = editable_model_or_404(request.user, owner=owner, name=name)
    access = get_object_or_404(AccessRequest, model=model, id=id)
    approve = decision == "approve"
    services.access_request_decide(request=access, approve=approve)
    was = "Approved" if approve else "Denied"
    messages.success(request, f"{was} {access.user.username}'s access to {model.slug}.")
    return HttpResponseRedirect(model.get_absolute_url())


@login_required
def access_requests_page(request):
    """The caller's access requests and their outcomes, and the requests waiting on their own models."""
    return render(
        request,
        "marketplace/access.html",
        {
            "mine": access_requests_of(request.user)[:200],
            "waiting": access_requests_pending_for_owner(request.user)[:200],
        },
    )
