"""REST doors of realtime: the event feed, notifications, webhook endpoints."""

from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api.pagination import CursorPagination
from realtime import selectors
from realtime.serializers import (
    EventListQuerySerializer,
    EventSerializer,
    NotificationPreferenceSerializer,
    NotificationSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointCreateSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointUpdateSerializer,
    WebhookEndpointWithSecretSerializer,
)
from realtime.services import notifications as notification_services
from realtime.services import webhooks as webhook_services


class EventListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Return events with a larger id."),
            OpenApiParameter("limit", int, description="At most this many (1-500, default 100)."),
        ],
        responses=inline_serializer(
            "EventPage",
            {"results": EventSerializer(many=True), "next": serializers.URLField(allow_null=True)},
        ),
        description="Events the caller may see, oldest first. An `after` older than the "
        "retained window (REALTIME_REPLAY_RETENTION_DAYS) is 410 `resync_required`.",
    )
    def get(self, request):
        query = EventListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        events = selectors.event_list_for_user(
            user=request.user,
            after=query.validated_data["after"],
            limit=limit + 1,
            check_horizon="after" in request.query_params,
        )
        next_url = None
        if len(events) > limit:
            events = events[:limit]
            params = urlencode({"after": events[-1].position, "limit": limit})
            next_url = request.build_absolute_uri(f"{request.path}?{params}")
        return Response({"results": EventSerializer(events, many=True).data, "next": next_url})


def _paginate(view: APIView, request, queryset, serializer_class):
    paginator = CursorPagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)


# --- Notifications -------------------------------------------------------------------------


class NotificationListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("unread", bool, description="Only unread ones.")],
        responses=NotificationSerializer(many=True),
    )
    def get(self, request):
        unread_only = request.query_params.get("unread", "").lower() in {"1", "true", "yes"}
        notifications = selectors.notification_list_for_user(
            user=request.user, unread_only=unread_only
        )
        response = _paginate(self, request, notifications, NotificationSerializer)
        response.data["unread_count"] = selectors.notification_unread_count(user=request.user)
        return response


class NotificationReadView(APIView):
    @extend_schema(request=None, responses=NotificationSerializer)
    def post(self, request, notification_id: int):
        notification = notification_services.notification_mark_read(
            notification_id=notification_id, user=request.user
        )
        return Response(NotificationSerializer(notification).data)


class NotificationReadAllView(APIView):
    @extend_schema(
        request=None, responses=inline_serializer("ReadAll", {"marked": serializers.IntegerField()})
    )
    def post(self, request):
        marked = notification_services.notification_mark_all_read(user=request.user)
        return Response({"marked": marked})


class NotificationPreferenceView(APIView):
    @extend_schema(responses=NotificationPreferenceSerializer)
    def get(self, request):
        preference = selectors.notification_preference_for_user(user=request.user)
        return Response(NotificationPreferenceSerializer(preference).data)

    @extend_schema(
        request=NotificationPreferenceSerializer, responses=NotificationPreferenceSerializer
    )
    def patch(self, request):
        body = NotificationPreferenceSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        preference = notification_services.notification_preference_update(
            user=request.user, **body.validated_data
        )
        return Response(NotificationPreferenceSerializer(preference).data)


# --- Webhook endpoints ---------------------------------------------------------------------


class WebhookEndpointListView(APIView):
    @extend_schema(responses=WebhookEndpointSerializer(many=True))
    def get(self, request):
        endpoints = selectors.webhook_endpoint_list_for_user(user=request.user)
        return _paginate(self, request, endpoints, WebhookEndpointSerializer)

    @extend_schema(
        request=WebhookEndpointCreateSerializer,
        responses={201: WebhookEndpointWithSecretSerializer},
        description="`events`: exact event names, `prefix.*` or `*`. The secret signs every "
        "delivery (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature).",
    )
    def post(self, request):
        body = WebhookEndpointCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = webhook_services.webhook_endpoint_create(
            owner=request.user, **body.validated_data
        )
        return Response(
            WebhookEndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED
        )


class WebhookEndpointDetailView(APIView):
    @extend_schema(responses=WebhookEndpointSerializer)
    def get(self, request, endpoint_id: int):
        endpoint = selectors.webhook_endpoint_get_for_user(
            user=request.user, endpoint_id=endpoint_id
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(request=WebhookEndpointUpdateSerializer, responses=WebhookEndpointSerializer)
    def patch(self, request, endpoint_id: int):
        body = WebhookEndpointUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint = webhook_services.webhook_endpoint_update(
            endpoint_id=endpoint_id, owner=request.user, **body.validated_data
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request, endpoint_id: int):
        webhook_services.webhook_endpoint_delete(endpoint_id=endpoint_id, owner=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointRotateSecretView(APIView):
    @extend_schema(request=None, responses=WebhookEndpointWithSecretSerializer)
    def post(self, request, endpoint_id: int):
        endpoint = webhook_services.webhook_endpoint_rotate_secret(
            endpoint_id=endpoint_id, owner=request.user
        )
        return Response(WebhookEndpointWithSecretSerializer(endpoint).data)


class WebhookDeliveryListView(APIView):
    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    def get(self, request, endpoint_id: int):
        endpoint = selectors.webhook_endpoint_get_for_user(
            user=request.user, endpoint_id=endpoint_id
        )
        deliveries = selectors.webhook_delivery_list_for_endpoint(endpoint=endpoint)
        return _paginate(self, request, deliveries, WebhookDeliverySerializer)


class WebhookDeliveryResendView(APIView):
    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    def post(self, request, endpoint_id: int, delivery_id: int):
        delivery = webhook_services.webhook_delivery_resend(
            endpoint_id=endpoint_id, delivery_id=delivery_id, owner=request.user
        )
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
