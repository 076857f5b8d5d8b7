"""REST endpoints for payment methods, funding, payments, timelines and refunds. Each view
parses, calls one service or selector, and renders."""

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import PermissionDenied
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from payments import selectors, services
from payments.models import Refund
from payments.serializers import (
    FundSerializer,
    PaymentMethodCreateSerializer,
    PaymentMethodSerializer,
    PaymentSerializer,
    RefundCreateSerializer,
    RefundSerializer,
)
from realtime import selectors as realtime_selectors
from realtime.serializers import EventSerializer


class PaymentMethodListCreateView(ListAPIView):
    serializer_class = PaymentMethodSerializer

    def get_queryset(self):
        return selectors.payment_method_list_for_user(user=self.request.user).order_by("-id")

    @extend_schema(request=PaymentMethodCreateSerializer, responses={201: PaymentMethodSerializer})
    def post(self, request):
        body = PaymentMethodCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        method = services.payment_method_create(
            user=request.user, token=body.validated_data["token"]
        )
        return Response(PaymentMethodSerializer(method).data, status=201)


class PaymentMethodDefaultView(APIView):
    @extend_schema(request=None, responses=PaymentMethodSerializer)
    def post(self, request, payment_method_id: int):
        method = services.payment_method_set_default(
            user=request.user, payment_method_id=payment_method_id
        )
        return Response(PaymentMethodSerializer(method).data)


class PaymentMethodDetailView(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request, payment_method_id: int):
        services.payment_method_remove(user=request.user, payment_method_id=payment_method_id)
        return Response(status=204)


class MilestoneFundView(APIView):
    @extend_schema(request=FundSerializer, responses={201: PaymentSerializer})
    def post(self, request, milestone_id: int):
        body = FundSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        payment = services.payment_fund(
            milestone_id=milestone_id,
            payment_method_id=body.validated_data["payment_method"],
            actor=request.user,
        )
        payment.refresh_from_db()
        return Response(PaymentSerializer(payment, context={"request": request}).data, status=201)


class PaymentListView(ListAPIView):
    serializer_class = PaymentSerializer

    def get_queryset(self):
        return selectors.payment_list_for_user(user=self.request.user)


class PaymentDetailView(APIView):
    @extend_schema(responses=PaymentSerializer)
    def get(self, request, payment_id: int):
        payment = selectors.payment_get_for_user(user=request.user, payment_id=payment_id)
        return Response(PaymentSerializer(payment, context={"request": request}).data)


class PaymentTimelineView(APIView):
    @extend_schema(responses=EventSerializer(many=True))
    def get(self, request, payment_id: int):
        events = realtime_selectors.payment_timeline_for_user(
            user=request.user, payment_id=payment_id
        )
        return Response(EventSerializer(events, many=True).data)


class PaymentRefundView(APIView):
    @extend_schema(request=RefundCreateSerializer, responses={201: RefundSerializer})
    def post(self, request, payment_id: int):
        # Visibility first: a payment the caller may not see is 404 for them, whoever they are.
        selectors.payment_get_for_user(user=request.user, payment_id=payment_id)
        if not request.user.is_staff:
            raise PermissionDenied("Only operators may refund payments.")
        body = RefundCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        refund = services.payment_refund(
            payment_id=payment_id, amount=body.validated_data["amount"], actor=request.user
        )
        refund = Refund.objects.get(pk=refund.pk)
        return Response(RefundSerializer(refund).data, status=201)


urlpatterns = [
    path("payment-methods", PaymentMethodListCreateView.as_view(), name="payment-methods"),
    path(
        "payment-methods/<int:payment_method_id>",
        PaymentMethodDetailView.as_view(),
        name="payment-method",
    ),
    path(
        "payment-methods/<int:payment_method_id>/default",
        PaymentMethodDefaultView.as_view(),
        name="payment-method-default",
    ),
    path("milestones/<int:milestone_id>/fund", MilestoneFundView.as_view(), name="milestone-fund"),
    path("payments", PaymentListView.as_view(), name="payments"),
    path("payments/<int:payment_id>", PaymentDetailView.as_view(), name="payment"),
    path(
        "payments/<int:payment_id>/timeline", PaymentTimelineView.as_view(), name="payment-timeline"
    ),
    path("payments/<int:payment_id>/refunds", PaymentRefundView.as_view(), name="payment-refunds"),
]
