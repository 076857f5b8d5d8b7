from rest_framework import serializers


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    type = serializers.CharField()
    channels = serializers.ListField(child=serializers.CharField())
    data = serializers.JSONField()
    timestamp = serializers.DateTimeField(source="created_at")


class EventListQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=500, required=False, default=100)
