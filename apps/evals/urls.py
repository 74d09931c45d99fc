from django.urls import path

from . import views

app_name = "evals"

urlpatterns = [
    path("", views.index, name="index"),
    path("suites/<int:suite_id>/", views.suite_detail, name="suite"),
    path("suites/<int:suite_id>/run/", views.run_suite, name="run_suite"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/compare/", views.compare_pick, name="compare_pick"),
    path("runs/<int:run_id>/compare/<int:other_id>/", views.compare, name="compare"),
    path("agents/<int:agent_id>/gates/", views.gates, name="gates"),
    path("agents/<int:agent_id>/gates/<str:mode>/", views.edit_gate, name="edit_gate"),
    path("agents/<int:agent_id>/mode/", views.change_mode, name="change_mode"),
    path("turns/<uuid:turn_id>/case/", views.case_from_turn, name="case_from_turn"),
    path("turns/<uuid:turn_id>/review/", views.review_turn, name="review"),
]
