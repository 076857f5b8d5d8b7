from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from escrow import money
from escrow.models import Milestone, Project


@extend_schema_field(
    {"type": "integer", "format": "int64", "minimum": 1, "maximum": money.MAX_AMOUNT}
)
class MinorUnitsField(serializers.Field):
    """An amount in minor units: a JSON integer only (no floats, strings or booleans)."""

    default_error_messages = {
        "type": "Must be a whole number of minor units (a JSON integer), not {kind}.",
        "range": "Must be between 1 and {max}.",
    }

    def to_internal_value(self, data):
        if type(data) is not int:
            self.fail("type", kind=type(data).__name__)
        if not 0 < data <= money.MAX_AMOUNT:
            self.fail("range", max=money.MAX_AMOUNT)
        return data

    def to_representation(self, value):
        return value


class CurrencyField(serializers.CharField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not money.is_supported_currency(value):
            raise serializers.ValidationError(
                f"Unsupported currency {value!r}; use a lowercase ISO 4217 code like 'usd'."
            )
        return value


class MilestoneInSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    amount = MinorUnitsField()
    due_date = serializers.DateField(required=False, allow_null=True)


class ProjectCreateSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    contractor = serializers.CharField(max_length=150, help_text="The contractor's username.")
    currency = CurrencyField(max_length=3, min_length=3)
    milestones = MilestoneInSerializer(many=True, allow_empty=False, max_length=50)


class MilestoneSummarySerializer(serializers.ModelSerializer):
    escrow_balance = serializers.SerializerMethodField()

    class Meta:
        model = Milestone
        fields = ["id", "title", "amount", "status", "due_date", "position", "escrow_balance"]

    def get_escrow_balance(self, milestone) -> int:
        return self.context.get("escrow_balances", {}).get(milestone.pk, 0)


class MilestoneSerializer(serializers.ModelSerializer):
    project = serializers.IntegerField(source="project_id")
    currency = serializers.CharField(source="project.currency")
    escrow_balance = serializers.SerializerMethodField()

    class Meta:
        model = Milestone
        fields = [
            "id",
            "project",
            "title",
            "amount",
            "currency",
            "status",
            "escrow_balance",
            "due_date",
            "funded_at",
            "submitted_at",
            "review_deadline",
            "released_at",
            "refunded_at",
        ]

    def get_escrow_balance(self, milestone) -> int:
        return self.context.get("escrow_balances", {}).get(milestone.pk, 0)


class ProjectSerializer(serializers.ModelSerializer):
    homeowner = serializers.CharField(source="homeowner.username")
    contractor = serializers.CharField(source="contractor.username")
    milestones = serializers.SerializerMethodField()
    escrow_balance = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = [
            "id",
            "title",
            "status",
            "homeowner",
            "contractor",
            "currency",
            "homeowner_signed_at",
            "contractor_signed_at",
            "escrow_balance",
            "milestones",
            "created_at",
        ]

    def get_milestones(self, project) -> list[dict]:
        milestones = sorted(project.milestones.all(), key=lambda m: (m.position, m.pk))
        return MilestoneSummarySerializer(milestones, many=True, context=self.context).data

    def get_escrow_balance(self, project) -> int:
        balances = self.context.get("escrow_balances", {})
        return sum(balances.get(m.pk, 0) for m in project.milestones.all())


class UtilizationSerializer(serializers.Serializer):
    budget = serializers.IntegerField()
    funded = serializers.IntegerField()
    released = serializers.IntegerField()
    fees = serializers.IntegerField()
    refunded = serializers.IntegerField()
    held = serializers.IntegerField()
    remaining = serializers.IntegerField()


class BalanceSerializer(serializers.Serializer):
    escrow_held = serializers.IntegerField()
    pending = serializers.IntegerField()
    payable = serializers.IntegerField()
    paid_out = serializers.IntegerField()
