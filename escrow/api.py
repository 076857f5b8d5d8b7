"""REST endpoints for projects, milestones and balances. Each view parses, calls one service
or selector, and renders."""

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework.generics import ListAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from escrow import selectors, services
from escrow.serializers import (
    MilestoneSerializer,
    ProjectCreateSerializer,
    ProjectSerializer,
    UtilizationSerializer,
)


def _project_response(project, *, status=200):
    balances = selectors.escrow_balances_by_milestone(m.pk for m in project.milestones.all())
    data = ProjectSerializer(project, context={"escrow_balances": balances}).data
    return Response(data, status=status)


def _milestone_response(milestone):
    balances = selectors.escrow_balances_by_milestone([milestone.pk])
    return Response(MilestoneSerializer(milestone, context={"escrow_balances": balances}).data)


class ProjectListCreateView(ListAPIView):
    serializer_class = ProjectSerializer

    def get_queryset(self):
        return selectors.project_list_for_user(user=self.request.user)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        context["escrow_balances"] = getattr(self, "_balances", {})
        return context

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        self._balances = selectors.escrow_balances_by_milestone(
            m.pk for project in page for m in project.milestones.all()
        )
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(request=ProjectCreateSerializer, responses={201: ProjectSerializer})
    def post(self, request):
        body = ProjectCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        project = services.project_create(
            homeowner=request.user,
            title=data["title"],
            contractor_username=data["contractor"],
            currency=data["currency"],
            milestones=data["milestones"],
        )
        project = selectors.project_get_for_user(user=request.user, project_id=project.pk)
        return _project_response(project, status=201)


class ProjectDetailView(APIView):
    @extend_schema(responses=ProjectSerializer)
    def get(self, request, project_id: int):
        return _project_response(
            selectors.project_get_for_user(user=request.user, project_id=project_id)
        )


class ProjectUtilizationView(APIView):
    @extend_schema(responses=UtilizationSerializer)
    def get(self, request, project_id: int):
        project = selectors.project_get_for_user(user=request.user, project_id=project_id)
        utilization = selectors.project_utilization(project=project)
        return Response(UtilizationSerializer(utilization).data)


def _project_action(service, description: str):
    class ProjectActionView(APIView):
        @extend_schema(request=None, responses=ProjectSerializer, description=description)
        def post(self, request, project_id: int):
            service(project_id=project_id, actor=request.user)
            return _project_response(
                selectors.project_get_for_user(user=request.user, project_id=project_id)
            )

    ProjectActionView.__name__ = f"Project{service.__name__.title().replace('_', '')}View"
    return ProjectActionView


class MilestoneDetailView(APIView):
    @extend_schema(responses=MilestoneSerializer)
    def get(self, request, milestone_id: int):
        return _milestone_response(
            selectors.milestone_get_for_user(user=request.user, milestone_id=milestone_id)
        )


def _milestone_action(service, description: str):
    class MilestoneActionView(APIView):
        @extend_schema(
            request=None,
            responses={
                200: MilestoneSerializer,
                404: OpenApiResponse(description="No such milestone, or not yours."),
                409: OpenApiResponse(description="Not allowed in the milestone's state."),
            },
            description=description,
        )
        def post(self, request, milestone_id: int):
            service(milestone_id=milestone_id, actor=request.user)
            return _milestone_response(
                selectors.milestone_get_for_user(user=request.user, milestone_id=milestone_id)
            )

    MilestoneActionView.__name__ = f"Milestone{service.__name__.title().replace('_', '')}View"
    return MilestoneActionView


class BalancesView(APIView):
    @extend_schema(
        responses={
            200: OpenApiResponse(
                response=OpenApiTypes.OBJECT,
                description="Per currency code: escrow_held, pending, payable and paid_out "
                "for the caller, in minor units.",
                examples=[
                    OpenApiExample(
                        "Contractor",
                        value={
                            "usd": {
                                "escrow_held": 0,
                                "pending": 0,
                                "payable": 114000,
                                "paid_out": 0,
                            }
                        },
                    )
                ],
            )
        },
    )
    def get(self, request):
        return Response(selectors.balances_for_user(user=request.user))


urlpatterns = [
    path("projects", ProjectListCreateView.as_view(), name="projects"),
    path("projects/<int:project_id>", ProjectDetailView.as_view(), name="project"),
    path(
        "projects/<int:project_id>/utilization",
        ProjectUtilizationView.as_view(),
        name="project-utilization",
    ),
    path(
        "projects/<int:project_id>/sign",
        _project_action(services.project_sign, "Sign as homeowner or contractor.").as_view(),
    ),
    path(
        "projects/<int:project_id>/cancel",
        _project_action(services.project_cancel, "Cancel (nothing funded).").as_view(),
    ),
    path("milestones/<int:milestone_id>", MilestoneDetailView.as_view(), name="milestone"),
    path(
        "milestones/<int:milestone_id>/submit",
        _milestone_action(services.milestone_submit, "Contractor: the work is done.").as_view(),
    ),
    path(
        "milestones/<int:milestone_id>/request-inspection",
        _milestone_action(
            services.milestone_request_inspection, "Homeowner: inspect before approving."
        ).as_view(),
    ),
    path(
        "milestones/<int:milestone_id>/approve",
        _milestone_action(
            services.milestone_approve, "Homeowner: approve and release the escrow."
        ).as_view(),
    ),
    path(
        "milestones/<int:milestone_id>/refund",
        _milestone_action(
            services.milestone_refund,
            "Homeowner (before submission) or operator: refund the escrow.",
        ).as_view(),
    ),
    path(
        "milestones/<int:milestone_id>/cancel",
        _milestone_action(services.milestone_cancel, "Drop an unfunded milestone.").as_view(),
    ),
    path("balances", BalancesView.as_view(), name="balances"),
]
