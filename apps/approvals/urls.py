from django.urls import path

from . import views

app_name = "approvals"

urlpatterns = [
    path("", views.queue, name="queue"),
    path("signals/", views.signals, name="signals"),
    path("<int:request_id>/", views.detail, name="detail"),
    path("<int:request_id>/panel/", views.panel, name="panel"),
    path("<int:request_id>/decide/", views.decide, name="decide"),
]
