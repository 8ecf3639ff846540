"""Catalog reads: who may see which model and version. Pages, the API, the serializers and inference ask here.

Every rule has one definition:
- a model is visible to everyone when public, else to its owner and staff (`is_visible_to`, `visible_models`);
- a model without a ready version is unpublished: only its owner and staff see it (`Model.is_published_for`);
- the owner (and staff) see every version; everyone else only the ready ones (`versions_visible_to`);
- "the latest version" is the highest-numbered ready one, leaving out optimized versions whose top label
  agrees with the original's too rarely (`latest_ready_version`); those run only when asked for by number.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.http import Http404

from .models import Model, ModelVersion, Visibility


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
