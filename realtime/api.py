from urllib.parse import urlencode

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime import selectors
from realtime.serializers import EventListQuerySerializer, EventSerializer


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
    )
    def get(self, request):
        query = EventListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        events = selectors.event_list_for_user(
            user=request.user, after=query.validated_data["after"], limit=limit + 1
        )
        next_url = None
        if len(events) > limit:
            events = events[:limit]
            params = urlencode({"after": events[-1].pk, "limit": limit})
            next_url = request.build_absolute_uri(f"{request.path}?{params}")
        return Response({"results": EventSerializer(events, many=True).data, "next": next_url})
