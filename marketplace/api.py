"""`/api/v1/models`: the catalog over HTTP. Views translate HTTP to `services` calls and nothing more."""

from __future__ import annotations

import logging

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.middleware import declared_body_length

from . import files, optimizing, services
from .filters import ModelFilterSet
from .models import AccessRequest, Model, ModelVersion
from .pagination import CatalogPagination
from .selectors import (
    GateClosed,
    access_requests_visible_to,
    check_may_run,
    listed_models,
    versions_visible_to,
    visible_model_or_404,
    visible_version_or_404,
)
from .serializers import (
    FORMAT_EXTENSIONS,
    MODEL_UPLOAD_SCHEMA,
    VERSION_UPLOAD_SCHEMA,
    ModelDetailSerializer,
    ModelSummarySerializer,
    ModelUpdateSerializer,
    ModelUploadSerializer,
    OptimizeSerializer,
    UploadPendingSerializer,
    VersionSerializer,
    VersionUploadSerializer,
    version_api_url,
)

logger = logging.getLogger(__name__)


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The upload is over the size limit."
    default_code = "payload_too_large"


class StoredFileUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The stored file cannot be served now."
    default_code = "file_unavailable"


class UnsupportedModel(APIException):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    default_detail = "The file is not a supported, valid model."
    default_code = "unsupported_model"


class ScopedByMethod:
    """Reads need the `read` scope, writes the `upload` scope."""

    @property
    def required_scope(self) -> str:
        return "read" if self.request.method in permissions.SAFE_METHODS else "upload"


def refuse_oversized_request(request) -> int:
    """The caller's upload limit, after refusing (413) a request whose declared length is already over it."""
    limit = services.effective_upload_limit_for(request.user)
    try:
        services.check_upload_size(
            size=declared_body_length(request), limit=limit, framing=services.MULTIPART_ALLOWANCE
        )
    except services.UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    return limit


class StreamsModelUploads:
    """Upload views: the model file streams into storage while the body is read (`services.streamed_uploads`),
    from before authentication, whose CSRF check may read the body."""

    def dispatch(self, request, *args, **kwargs):
        if request.method != "POST":
            return super().dispatch(request, *args, **kwargs)
        with services.streamed_uploads(request):
            return super().dispatch(request, *args, **kwargs)


def upload_data(request):
    """The request's form data, its model file already stored; 413 when the file was stopped at the limit."""
    try:
        data = request.data
        services.refuse_stopped_upload(request._request)
    except services.UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    return data


def store_or_refuse(*, file, limit: int) -> services.StoredFile:
    try:
        return services.store_upload(file=file, limit=limit)
    except services.UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except services.UnsupportedModelFile as exc:
        raise UnsupportedModel(str(exc)) from exc


def tokenizer_store_or_refuse(*, file, task: str) -> services.StoredFile | None:
    """The upload's tokenizer.json checked and stored (None without one): 400 for a task that takes no text,
    413 over the size limit, 415 when it does not load or encode."""
    if file is None:
        return None
    try:
        services.check_tokenizer_task(task=task)
        return services.store_tokenizer(file=file)
    except services.TokenizerNotForTask as exc:
        raise ValidationError({"tokenizer": [str(exc)]}) from exc
    except services.UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except services.UnsupportedTokenizer as exc:
        raise UnsupportedModel(f"The tokenizer is not usable: {exc}") from exc


def model_file_store_or_refuse(*, file, limit: int, tokenizer: services.StoredFile | None):
    try:
        return store_or_refuse(file=file, limit=limit)
    except APIException:
        services.discard_stored_tokenizer(tokenizer.name if tokenizer else "")
        raise


def pending_response(version: ModelVersion) -> Response:
    body = {
        "number": version.number,
        "status": version.status,
        "url": version_api_url(version),
        "detail": "Validation is still running; poll the url for the result.",
    }
    return Response(body, status=status.HTTP_202_ACCEPTED)


class ModelListCreateView(StreamsModelUploads, ScopedByMethod, generics.ListAPIView):
    serializer_class = ModelSummarySerializer
    filterset_class = ModelFilterSet
    pagination_class = CatalogPagination
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return listed_models(self.request.user)

    @extend_schema(summary="List and search models", responses=ModelSummarySerializer(many=True))
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Upload a new model (its version 1)",
        request={"multipart/form-data": MODEL_UPLOAD_SCHEMA},
        responses={
            201: ModelDetailSerializer,
            202: UploadPendingSerializer,
            413: OpenApiResponse(description="too large"),
            415: OpenApiResponse(description="not a supported, valid model"),
        },
    )
    def post(self, request, *args, **kwargs):
        limit = refuse_oversized_request(request)
        payload = ModelUploadSerializer(data=upload_data(request))
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        if Model.objects.filter(owner=request.user, name__iexact=data["name"]).exists():
            raise ValidationError({"name": [f"You already have a model named {data['name']!r}."]})
        tokenizer = tokenizer_store_or_refuse(file=data["tokenizer"], task=data["task"])
        stored = model_file_store_or_refuse(file=data["file"], limit=limit, tokenizer=tokenizer)
        try:
            version = services.model_create_from_upload(
                owner=request.user, data=data, stored=stored, tokenizer=tokenizer
            )
        except services.ModelNameTaken as exc:
            raise ValidationError({"name": [str(exc)]}) from exc
        except services.PrivateModelLimitReached as exc:
            raise ValidationError({"visibility": [str(exc)]}) from exc
        version = services.version_publish(version=version)
        if version.status == ModelVersion.Status.REJECTED:
            raise UnsupportedModel(version.reason)
        if version.status == ModelVersion.Status.VALIDATING:
            return pending_response(version)
        model = Model.objects.select_related("owner").get(pk=version.model_id)
        return Response(
            ModelDetailSerializer(model, context={"request": request}).data, status=status.HTTP_201_CREATED
        )


class ModelDetailView(ScopedByMethod, generics.GenericAPIView):
    serializer_class = ModelDetailSerializer

    def get_object(self) -> Model:
        model = visible_model_or_404(self.request.user, owner=self.kwargs["owner"], name=self.kwargs["name"])
        if self.request.method not in permissions.SAFE_METHODS and not model.is_editable_by(
            self.request.user
        ):
            raise PermissionDenied("Only the model's owner can change it.")
        return model

    @extend_schema(summary="A model's detail")
    def get(self, request, owner: str, name: str):
        return Response(ModelDetailSerializer(self.get_object(), context={"request": request}).data)

    @extend_schema(
        summary="Edit a model's metadata (owner only)",
        request=ModelUpdateSerializer,
        responses=ModelDetailSerializer,
    )
    def patch(self, request, owner: str, name: str):
        model = self.get_object()
        changes = ModelUpdateSerializer(model, data=request.data, partial=True)
        changes.is_valid(raise_exception=True)
        try:
            model = services.model_update(model=model, **changes.validated_data)
        except services.PrivateModelLimitReached as exc:
            raise ValidationError({"visibility": [str(exc)]}) from exc
        return Response(ModelDetailSerializer(model, context={"request": request}).data)

    @extend_schema(summary="Delete a model and all its versions (owner only)", responses={204: None})
    def delete(self, request, owner: str, name: str):
        services.model_delete(model=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class VersionListCreateView(StreamsModelUploads, ScopedByMethod, generics.GenericAPIView):
    serializer_class = VersionSerializer
    pagination_class = None  # a model's versions come as one list
    queryset = ModelVersion.objects.none()  # versions are looked up through their visible model
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(summary="A model's versions", responses=VersionSerializer(many=True))
    def get(self, request, owner: str, name: str):
        model = visible_model_or_404(request.user, owner=owner, name=name)
        return Response(VersionSerializer(versions_visible_to(request.user, model), many=True).data)

    @extend_schema(
        summary="Upload a new version (owner only)",
        request={"multipart/form-data": VERSION_UPLOAD_SCHEMA},
        responses={
            201: VersionSerializer,
            202: UploadPendingSerializer,
            413: OpenApiResponse(description="too large"),
            415: OpenApiResponse(description="not a supported, valid model"),
        },
    )
    def post(self, request, owner: str, name: str):
        model = visible_model_or_404(request.user, owner=owner, name=name)
        if not model.is_editable_by(request.user):
            raise PermissionDenied("Only the model's owner can add versions.")
        limit = refuse_oversized_request(request)
        payload = VersionUploadSerializer(data=upload_data(request))
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        tokenizer = tokenizer_store_or_refuse(file=data["tokenizer"], task=model.task)
        stored = model_file_store_or_refuse(file=data["file"], limit=limit, tokenizer=tokenizer)
        version = services.version_create(
            model=model,
            stored=stored,
            notes=data["notes"],
            signature_hint=data["signature"] or None,
            example=data["example"],
            tokenizer=tokenizer,
        )
        version = services.version_publish(version=version)
        if version.status == ModelVersion.Status.REJECTED:
            raise UnsupportedModel(version.reason)
        if version.status == ModelVersion.Status.VALIDATING:
            return pending_response(version)
        return Response(VersionSerializer(version).data, status=status.HTTP_201_CREATED)


class VersionDetailView(APIView):
    """Versions are immutable: GET only (PUT, PATCH and DELETE answer 405)."""

    required_scope = "read"

    @extend_schema(summary="One version", responses=VersionSerializer)
    def get(self, request, owner: str, name: str, number: int):
        return Response(
            VersionSerializer(
                visible_version_or_404(request.user, owner=owner, name=name, number=number)
            ).data
        )


class NotReady(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The version is not ready."
    default_code = "not_ready"


class VersionOptimizeView(APIView):
    """Make a quantized version from version n (owner only): 202 naming the new version the worker fills."""

    required_scope = "upload"

    @extend_schema(
        summary="Optimize a version into a new, quantized one (owner only)",
        request=OptimizeSerializer,
        responses={
            202: UploadPendingSerializer,
            400: OpenApiResponse(description="unknown method"),
            403: OpenApiResponse(description="not the model's owner"),
            409: OpenApiResponse(description="the version is not ready"),
            415: OpenApiResponse(description="not an ONNX version"),
        },
    )
    def post(self, request, owner: str, name: str, number: int):
        source = visible_version_or_404(request.user, owner=owner, name=name, number=number)
        if not source.model.is_editable_by(request.user):
            raise PermissionDenied("Only the model's owner can optimize its versions.")
        payload = OptimizeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            version = optimizing.version_optimize(source=source, method=payload.validated_data["method"])
        except optimizing.NotOptimizable as exc:
            raise UnsupportedModel(str(exc)) from exc
        except optimizing.VersionNotReady as exc:
            raise NotReady(str(exc)) from exc
        body = {
            "number": version.number,
            "status": version.status,
            "url": version_api_url(version),
            "detail": f"Optimizing version {source.number} into version {version.number}; poll the url for "
            "the result.",
        }
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class VersionFileView(APIView):
    required_scope = "read"

    @extend_schema(
        summary="Download a version's file as uploaded",
        responses={(200, "application/octet-stream"): OpenApiResponse(description="the model file")},
        parameters=[OpenApiParameter("number", int, OpenApiParameter.PATH)],
    )
    def get(self, request, owner: str, name: str, number: int):
        version = visible_version_or_404(request.user, owner=owner, name=name, number=number)
        try:
            check_may_run(request.user, version.model)
        except GateClosed as exc:
            raise PermissionDenied(str(exc)) from None
        if version.status != ModelVersion.Status.READY or not files.exists(version.file.name):
            raise Http404("This version has no downloadable file.")
        filename = f"{version.model.name}-v{version.number}.{FORMAT_EXTENSIONS.get(version.format, 'bin')}"
        # Streamed through this process, also from S3 (the README says why not a presigned URL), and decrypted
        # here when stored encrypted.
        try:
            response = files.download_response(
                version.file.name, key=version.file_key, filename=filename, size=version.size
            )
        except files.FileMismatch as exc:
            logger.error("download of %s refused: %s", version, exc)
            raise StoredFileUnavailable(
                "The stored file failed its integrity check and is not served; the operators are told."
            ) from exc
        except files.FileUnavailable as exc:
            raise StoredFileUnavailable(f"The stored file cannot be served now: {exc}.") from exc
        services.version_record_download(version=version)
        response["X-Content-SHA256"] = version.sha256
        return response


# --- gated models: access requests --------------------------------------------------------------------------


class AccessRequestSerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.username", read_only=True)
    model = serializers.CharField(source="model.slug", read_only=True)

    class Meta:
        model = AccessRequest
        fields = ["id", "model", "user", "reason", "status", "created_at", "decided_at"]
        read_only_fields = fields


class AccessRequestInput(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class AccessRequestListCreateView(APIView):
    """A gated model's access requests: the caller's own, or all of them for the owner; POST asks."""

    required_scope = "read"

    @extend_schema(summary="Access requests of a gated model", responses=AccessRequestSerializer(many=True))
    def get(self, request, owner: str, name: str):
        if not request.user.is_authenticated:
            self.permission_denied(request)
        model = visible_model_or_404(request.user, owner=owner, name=name)
        requests = access_requests_visible_to(request.user, model)
        return Response(AccessRequestSerializer(requests, many=True).data)

    @extend_schema(
        summary="Ask for access to a gated model",
        request=AccessRequestInput,
        responses={
            201: AccessRequestSerializer,
            200: OpenApiResponse(AccessRequestSerializer, description="Already asked (pending or approved)."),
            400: OpenApiResponse(description="The model is not gated, or it is yours."),
        },
    )
    def post(self, request, owner: str, name: str):
        model = visible_model_or_404(request.user, owner=owner, name=name)
        payload = AccessRequestInput(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            access, created = services.access_request_create(
                model=model, user=request.user, reason=payload.validated_data["reason"]
            )
        except services.AccessRequestRefused as exc:
            raise ValidationError({"detail": str(exc)}) from exc
        return Response(
            AccessRequestSerializer(access).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


DECIDE_RESPONSES = {
    200: AccessRequestSerializer,
    403: OpenApiResponse(description="Not the model's owner."),
    404: OpenApiResponse(description="No such request on this model."),
}


class AccessRequestDecideView(APIView):
    """The owner approves or denies a request; denying an approved one revokes the access."""

    required_scope = "upload"

    def decide(self, request, *, owner: str, name: str, id: int, approve: bool) -> Response:
        model = visible_model_or_404(request.user, owner=owner, name=name)
        if not model.is_editable_by(request.user):
            raise PermissionDenied("Only the model's owner can answer access requests.")
        access = model.access_requests.select_related("user", "model__owner").filter(id=id).first()
        if access is None:
            raise Http404("No such access request.")
        access = services.access_request_decide(request=access, approve=approve)
        return Response(AccessRequestSerializer(access).data)


class AccessRequestApproveView(AccessRequestDecideView):
    @extend_schema(
        operation_id="access_requests_approve",
        summary="Approve an access request (owner only)",
        request=None,
        responses=DECIDE_RESPONSES,
    )
    def post(self, request, owner: str, name: str, id: int):
        return self.decide(request, owner=owner, name=name, id=id, approve=True)


class AccessRequestDenyView(AccessRequestDecideView):
    @extend_schema(
        operation_id="access_requests_deny",
        summary="Deny an access request, or revoke an approved one (owner only)",
        request=None,
        responses=DECIDE_RESPONSES,
    )
    def post(self, request, owner: str, name: str, id: int):
        return self.decide(request, owner=owner, name=name, id=id, approve=False)
