from django.urls import path

from . import views

app_name = "handoffs"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("<int:handoff_id>/", views.detail, name="detail"),
    path("<int:handoff_id>/claim/", views.claim, name="claim"),
    path("<int:handoff_id>/resolve/", views.resolve, name="resolve"),
    path("<int:handoff_id>/return/", views.return_to_agent, name="return"),
]
