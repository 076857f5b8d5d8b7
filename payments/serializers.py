from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from escrow.serializers import MinorUnitsField
from payments import selectors
from payments.models import Payment, PaymentMethod, Refund


class PaymentMethodCreateSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=255)


class PaymentMethodSerializer(serializers.ModelSerializer):
    class Meta:
        model = PaymentMethod
        fields = ["id", "brand", "last4", "exp_month", "exp_year", "status", "is_default"]


class FundSerializer(serializers.Serializer):
    payment_method = serializers.IntegerField()


class NextActionSerializer(serializers.Serializer):
    """What the payer's browser must do to finish 3-D Secure: `use_stripe_sdk` →
    `stripe.handleNextAction({clientSecret: client_secret})`; `redirect_to_url` → send the
    payer to `redirect_url`."""

    type = serializers.ChoiceField(choices=["use_stripe_sdk", "redirect_to_url"])
    client_secret = serializers.CharField()
    redirect_url = serializers.CharField(required=False)


class PaymentSerializer(serializers.ModelSerializer):
    """`next_action` is null except for the payer, while the payment is `verifying`."""

    failure_code = serializers.SerializerMethodField()
    next_action = serializers.SerializerMethodField()

    class Meta:
        model = Payment
        fields = [
            "id",
            "status",
            "amount",
            "amount_refunded",
            "currency",
            "milestone",
            "payer",
            "payee",
            "failure_code",
            "next_action",
            "created_at",
        ]

    def get_failure_code(self, payment) -> str | None:
        return payment.failure_code or None

    @extend_schema_field(NextActionSerializer(allow_null=True))
    def get_next_action(self, payment) -> dict | None:
        request = self.context.get("request")
        action = selectors.payment_next_action_for(
            user=getattr(request, "user", None), payment=payment
        )
        if action and request is not None and action.get("redirect_url", "").startswith("/"):
            action["redirect_url"] = request.build_absolute_uri(action["redirect_url"])
        return action


class RefundCreateSerializer(serializers.Serializer):
    # The same field as milestone amounts: a JSON integer only. DRF's IntegerField would take
    # "5" and 5.0 and refund them.
    amount = MinorUnitsField()


class RefundSerializer(serializers.ModelSerializer):
    class Meta:
        model = Refund
        fields = ["id", "payment", "amount", "currency", "status", "created_at"]
