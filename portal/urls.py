from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("fragments/dashboard", views.dashboard_fragment, name="dashboard_fragment"),
    path("projects/<int:project_id>/", views.project_detail, name="project"),
    path("projects/<int:project_id>/fragment", views.project_fragment, name="project_fragment"),
    path("projects/<int:project_id>/sign", views.project_sign, name="project_sign"),
    path(
        "milestones/<int:milestone_id>/<slug:action>",
        views.milestone_action,
        name="milestone_action",
    ),
    path("payments/<int:payment_id>/", views.payment_detail, name="payment"),
    path("payments/<int:payment_id>/fragment", views.payment_fragment, name="payment_fragment"),
    path("payment-methods/", views.payment_methods, name="payment_methods"),
    path(
        "payment-methods/fragment",
        views.payment_methods_fragment,
        name="payment_methods_fragment",
    ),
    path(
        "payment-methods/<int:method_id>/<slug:change>",
        views.payment_method_change,
        name="payment_method_change",
    ),
    path("notifications/", views.notifications, name="notifications"),
    path("notifications/fragment", views.notifications_fragment, name="notifications_fragment"),
    path("notifications/unread", views.notifications_unread, name="notifications_unread"),
    path(
        "notifications/preferences",
        views.notification_preferences,
        name="notification_preferences",
    ),
    path("notifications/read-all", views.notifications_read_all, name="notifications_read_all"),
    path(
        "notifications/<int:notification_id>/read",
        views.notification_read,
        name="notification_read",
    ),
]
