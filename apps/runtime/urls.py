from django.urls import path

from . import views

app_name = "runtime"

urlpatterns = [
    path("", views.try_it, name="try"),
    path("<uuid:conversation_id>/", views.conversation, name="conversation"),
    path("<uuid:conversation_id>/turns/<uuid:turn_id>/", views.turn_fragment, name="turn"),
]
