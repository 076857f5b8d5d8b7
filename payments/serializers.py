from rest_framework import serializers

from escrow.serializers import MinorUnitsField
from payments.models import Payment, PaymentMethod, Refund


class PaymentMethodCreateSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=255)


class PaymentMethodSerializer(serializers.ModelSerializer):
    class Meta:
        model = PaymentMethod
        fields = ["id", "brand", "last4", "exp_month", "exp_year", "status", "is_default"]


class FundSerializer(serializers.Serializer):
    payment_method = serializers.IntegerField()


class PaymentSerializer(serializers.ModelSerializer):
    failure_code = serializers.SerializerMethodField()

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
            "created_at",
        ]

    def get_failure_code(self, payment) -> str | None:
        return payment.failure_code or None


class RefundCreateSerializer(serializers.Serializer):
    # The same field as milestone amounts: a JSON integer only. DRF's IntegerField would take
    # "5" and 5.0 and refund them.
    amount = MinorUnitsField()


class RefundSerializer(serializers.ModelSerializer):
    class Meta:
        model = Refund
        fields = ["id", "payment", "amount", "currency", "status", "created_at"]
