"""`/api/v1/keys` and `/api/v1/usage`."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from .authentication import HasScope, SessionOnly
from .models import ApiKey, Scope
from .selectors import usage_per_day, usage_summary
from .services import key_create, key_revoke


class ScopesField(serializers.ListField):
    """A JSON list of scopes, or a comma-separated string (as form posts and scripts send them)."""

    child = serializers.ChoiceField(choices=Scope.choices)

    def to_internal_value(self, data):
        if isinstance(data, str):
            data = [item.strip() for item in data.split(",") if item.strip()]
        return super().to_internal_value(data)


class KeyOutput(serializers.ModelSerializer):
    prefix = serializers.CharField(source="display")

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "requests_per_minute",
            "requests_per_day",
        ]


class KeyCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = ScopesField(allow_empty=False)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    requests_per_minute = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    requests_per_day = serializers.IntegerField(required=False, allow_null=True, min_value=0)


class KeyCreatedOutput(KeyOutput):
    key = serializers.CharField(help_text="The key itself, shown this once: store it now.")

    class Meta(KeyOutput.Meta):
        fields = [*KeyOutput.Meta.fields, "key"]


class KeyListCreate(APIView):
    """The caller's API keys. Managed from a logged-in session only: a request made with a key gets 403."""

    permission_classes = [IsAuthenticated, SessionOnly]

    @extend_schema(responses=KeyOutput(many=True), summary="List your API keys")
    def get(self, request):
        keys = ApiKey.objects.filter(user=request.user)
        return Response(KeyOutput(keys, many=True).data)

    @extend_schema(
        request=KeyCreateInput,
        responses={201: KeyCreatedOutput},
        summary="Create an API key",
        description="The response holds `key` this once; only its prefix and a hash are stored.",
    )
    def post(self, request):
        data = KeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            key, raw_key = key_create(user=request.user, **data.validated_data)
        except ValueError as error:
            raise serializers.ValidationError({"detail": str(error)}) from error
        body = KeyOutput(key).data
        body["key"] = raw_key
        return Response(body, status=status.HTTP_201_CREATED)


class KeyDetail(APIView):
    permission_classes = [IsAuthenticated, SessionOnly]

    @extend_schema(responses={204: None}, summary="Revoke an API key")
    def delete(self, request, key_id: int):
        key = get_object_or_404(ApiKey, pk=key_id, user=request.user)
        key_revoke(key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UsageOutput(serializers.Serializer):
    plan = serializers.CharField()
    limits = inline_serializer(
        "UsageLimits",
        {
            "requests_per_minute": serializers.IntegerField(),
            "requests_per_day": serializers.IntegerField(),
            "compute_seconds_per_month": serializers.IntegerField(),
            "max_upload_bytes": serializers.IntegerField(),
            "max_private_models": serializers.IntegerField(),
        },
    )
    used = inline_serializer(
        "UsageUsed",
        {
            "requests_per_minute": serializers.IntegerField(),
            "requests_per_day": serializers.IntegerField(),
            "compute_seconds_per_month": serializers.FloatField(),
        },
    )
    remaining = inline_serializer(
        "UsageRemaining",
        {
            "requests_per_minute": serializers.IntegerField(),
            "requests_per_day": serializers.IntegerField(),
            "compute_seconds_per_month": serializers.FloatField(),
        },
    )
    reset = inline_serializer(
        "UsageReset",
        {"requests_per_minute": serializers.IntegerField(), "requests_per_day": serializers.IntegerField()},
    )
    days = inline_serializer(
        "UsageDayTotals",
        {
            "day": serializers.DateField(),
            "requests": serializers.IntegerField(),
            "succeeded": serializers.IntegerField(),
            "compute_seconds": serializers.FloatField(),
            "bytes_in": serializers.IntegerField(),
            "bytes_out": serializers.IntegerField(),
        },
        many=True,
    )


class UsageView(APIView):
    permission_classes = [IsAuthenticated, HasScope]
    required_scope = "read"

    @extend_schema(
        responses=UsageOutput,
        parameters=[
            OpenApiParameter("days", int, description="How many days of history (1–365, default 30).")
        ],
        summary="Your plan, limits, what is used and what remains",
    )
    def get(self, request):
        try:
            days = int(request.query_params.get("days", 30))
        except ValueError:
            days = 0
        if not 1 <= days <= 365:
            raise serializers.ValidationError({"days": "Give a whole number of days from 1 to 365."})
        body = usage_summary(request.user).as_dict()
        body["days"] = usage_per_day(request.user, days=days)
        return Response(body)
