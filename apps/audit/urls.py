from django.urls import path

from . import views

app_name = "audit"

urlpatterns = [
    path("", views.events, name="events"),
    path("events/<int:seq>/", views.event, name="event"),
    path("turns/<str:turn_id>/", views.turn, name="turn"),
    path("export/", views.export, name="export"),
    path("reports/", views.reports, name="reports"),
]
