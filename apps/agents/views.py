from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .selectors import agents_visible_to, kill_switches_visible_to


@login_required
def home(request):
    """The control panel's front page: the agents this person can see, and any kill switch."""
    agents = list(agents_visible_to(request.user))
    switches = kill_switches_visible_to(request.user)
    return render(
        request,
        "agents/home.html",
        {
            "agents": agents,
            "engaged_switches": [switch for switch in switches if switch.engaged],
        },
    )
