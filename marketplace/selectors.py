"""Catalog reads: who may see which model and version. Pages, the API, the serializers and inference ask here.

Every rule has one definition:
- a model is visible to everyone when public, else to its owner and staff (`is_visible_to`, `visible_models`);
- a model without a ready version is unpublished: only its owner and staff see it (`Model.is_published_for`);
- the owner (and staff) see every version; everyone else only the ready ones (`versions_visible_to`);
- "the latest version" is the highest-numbered ready one, leaving out optimized versions whose top label
  agrees with the original's too rarely (`latest_ready_version`); those run only when asked for by number.
- a visible model may be run and downloaded by everyone, unless it is gated: then by its owner, staff and the
  users whose access request the owner approved (`may_run`; `GateClosed` says how to ask).
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q, QuerySet
from django.http import Http404
from django.urls import reverse

from portal import process_cache

from .models import AccessRequest, Model, ModelVersion, Visibility


def is_visible_to(user, *, owner_id: int, visibility: str) -> bool:
    """The visibility rule on plain values, for callers that cache a model's fields (inference's look-up)."""
    if visibility == Visibility.PUBLIC:
        return True
    return user is not None and user.is_authenticated and (user.is_staff or user.pk == owner_id)


def visible_models(user) -> QuerySet[Model]:
    """`is_visible_to` as a query: public models, the user's own private ones, everything for staff."""
    models = Model.objects.all()
    if user is not None and user.is_authenticated:
        if user.is_staff:
            return models
        return models.filter(Q(visibility=Visibility.PUBLIC) | Q(owner=user))
    return models.filter(visibility=Visibility.PUBLIC)


def listed_models(user) -> QuerySet[Model]:
    """What browsing and `GET /api/v1/models` list: visible models that have a ready version."""
    return visible_models(user).exclude(latest_format="").select_related("owner")


def visible_model_or_404(user, *, owner: str, name: str) -> Model:
    """owner/name (name case-insensitive) if `user` may see it; a 404 otherwise, so nothing private leaks."""
    model = (
        visible_models(user).select_related("owner").filter(owner__username=owner, name__iexact=name).first()
    )
    if model is None or not model.is_published_for(user):
        raise Http404("No such model.")
    return model


def ready_versions(model: Model) -> QuerySet[ModelVersion]:
    """The model's ready versions, newest first."""
    return model.versions.filter(status=ModelVersion.Status.READY).order_by("-number")


def latest_ready_version(model: Model, *, among: list[ModelVersion] | None = None) -> ModelVersion | None:
    """The highest-numbered ready version that is not marked `low_agreement`: what runs by default, and whose
    signature the model shows. `among`: the model's ready versions, newest first, when the caller has them."""
    if among is None:
        return ready_versions(model).filter(low_agreement=False).first()
    return next((version for version in among if not version.low_agreement), None)


def versions_visible_to(user, model: Model) -> QuerySet[ModelVersion]:
    """The versions `user` may see, newest first: all of them for the owner and staff, else the ready ones."""
    if model.is_editable_by(user):
        return model.versions.select_related("model__owner", "derived_from").order_by("-number")
    return ready_versions(model).select_related("model__owner", "derived_from")


def visible_version_or_404(user, *, owner: str, name: str, number: int) -> ModelVersion:
    model = visible_model_or_404(user, owner=owner, name=name)
    version = versions_visible_to(user, model).filter(number=number).first()
    if version is None:
        raise Http404("No such version.")
    return version


def editable_model_or_404(user, *, owner: str, name: str) -> Model:
    """A model `user` may change; a 404 (not 403) for everyone else, as for a model they cannot see."""
    model = visible_model_or_404(user, owner=owner, name=name)
    if not model.is_editable_by(user):
        raise Http404("No such model.")
    return model


# --- gated models -------------------------------------------------------------------------------------------


class GateClosed(PermissionError):
    """The caller may see a gated model but not run or download it; the message says how to ask."""

    def __init__(self, *, owner: str, name: str):
        slug = f"{owner}/{name}"
        api = reverse("api-access-requests", kwargs={"owner": owner, "name": name})
        page = reverse("model-detail", kwargs={"owner": owner, "name": name})
        super().__init__(
            f"{slug} is gated: only users its owner approved may run or download it. Ask for access with "
            f'POST {api} (optional "reason"), or with "Request access" on its page {page}.'
        )


def access_cache_key(*, model_id: int, user_id: int) -> str:
    return f"marketplace:access:{model_id}:{user_id}"


def may_run(user, *, model_id: int, owner_id: int, gated: bool) -> bool:
    """Whether `user` may run and download a model they can see: the one rule, for every protocol and page.

    The grant is cached (the hot path asks on every call); every change of a request goes through
    `services.access_request_decide` and friends, which forget the entry in every process."""
    if not gated:
        return True
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff or user.pk == owner_id:
        return True
    granted = process_cache.cached(
        access_cache_key(model_id=model_id, user_id=user.pk),
        lambda: AccessRequest.objects.filter(
            model_id=model_id, user_id=user.pk, status=AccessRequest.Status.APPROVED
        ).exists(),
        settings.ACCESS_CACHE_SECONDS,
    )
    return bool(granted)


def check_may_run(user, model: Model) -> None:
    """Raises GateClosed unless `user` may run and download `model`."""
    if not may_run(user, model_id=model.pk, owner_id=model.owner_id, gated=model.gated):
        raise GateClosed(owner=model.owner.username, name=model.name)


def access_requests_visible_to(user, model: Model) -> QuerySet[AccessRequest]:
    """All of a model's requests for its owner (and staff); the caller's own for everyone else."""
    requests = model.access_requests.select_related("user", "model__owner")
    if model.is_editable_by(user):
        return requests
    if user is None or not user.is_authenticated:
        return requests.none()
    return requests.filter(user=user)


def access_requests_of(user) -> QuerySet[AccessRequest]:
    """The requests `user` made, newest first (their settings page shows the outcomes)."""
    return AccessRequest.objects.filter(user=user).select_related("model__owner")


def access_requests_pending_for_owner(user) -> QuerySet[AccessRequest]:
    return AccessRequest.objects.filter(
        model__owner=user, status=AccessRequest.Status.PENDING
    ).select_related("user", "model__owner")
