"""The "try it" page: an agent owner talks to an agent as themselves, with a subject context
they choose, and watches each turn's trace appear (htmx polls a running turn; without
JavaScript the page refreshes itself while a turn runs)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET

from apps.agents.models import Agent

from . import services
from .forms import MessageForm, StartConversationForm
from .models import Conversation, Turn


def _agents_for(user):
    return Agent.objects.for_user(user, "runtime.add_conversation").select_related("tenant").order_by("tenant", "name")


@login_required
def try_it(request):
    agents = _agents_for(request.user)
    form = StartConversationForm(request.POST or None, agents=agents)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        agent, channel = data.pop("agent"), data.pop("channel")
        try:
            conversation = services.open_conversation(actor=request.user, agent=agent, channel=channel, **data)
        except (ValidationError, PermissionDenied) as error:
            _form_errors(form, error)
        else:
            return redirect("runtime:conversation", conversation.pk)
    recent = Conversation.objects.filter(actor=request.user).select_related("agent").order_by("-updated_at")[:10]
    return render(request, "runtime/try.html", {"form": form, "agents": agents, "recent": recent})


def _form_errors(form, error) -> None:
    if isinstance(error, PermissionDenied):
        form.add_error(None, str(error))
        return
    for field, problems in getattr(error, "message_dict", {None: error.messages}).items():
        form.add_error(field if field in form.fields else None, problems)


def _own_conversation(request, conversation_id) -> Conversation:
    """The page is for talking as yourself: another person's conversation is not found."""
    return get_object_or_404(
        Conversation.objects.select_related("agent", "tenant"), pk=conversation_id, actor=request.user
    )


@login_required
def conversation(request, conversation_id):
    conversation = _own_conversation(request, conversation_id)
    form = MessageForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.submit_turn(conversation=conversation, actor=request.user, text=form.cleaned_data["text"])
        except services.TurnRefused as refusal:
            messages.error(request, refusal.message)
        except (ValidationError, PermissionDenied) as error:
            messages.error(request, " ".join(getattr(error, "messages", [str(error)])))
        else:
            return redirect("runtime:conversation", conversation.pk)
    turns = list(conversation.turns.prefetch_related("steps").order_by("number"))
    return render(
        request,
        "runtime/conversation.html",
        {
            "conversation": conversation,
            "turns": turns,
            "form": form,
            "running": any(not turn.finished for turn in turns),
        },
    )


@login_required
@require_GET
def turn_fragment(request, conversation_id, turn_id):
    """One turn with its trace, for htmx to swap in while it runs."""
    conversation = _own_conversation(request, conversation_id)
    turn = get_object_or_404(Turn.objects.prefetch_related("steps"), pk=turn_id, conversation=conversation)
    return render(request, "runtime/_turn.html", {"conversation": conversation, "turn": turn})
