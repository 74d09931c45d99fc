from django import forms

from apps.agents.choices import Channel
from apps.agents.models import Agent
from apps.knowledge.choices import Audience


class StartConversationForm(forms.Form):
    """The "try it" page's subject context: who the agent talks to, as the agent would see it."""

    agent = forms.ModelChoiceField(queryset=Agent.objects.none(), empty_label=None)
    channel = forms.ChoiceField(choices=Channel.choices, initial=Channel.WEB_CHAT)
    audience = forms.ChoiceField(choices=Audience.choices, initial=Audience.CUSTOMER)
    subject = forms.CharField(max_length=200, required=False, label="Customer id", help_text="e.g. C-1001")
    subject_verified = forms.BooleanField(required=False, label="Identity verified")
    region = forms.CharField(max_length=40, required=False)
    segment = forms.CharField(max_length=40, required=False)
    plan = forms.CharField(max_length=40, required=False)
    brand = forms.CharField(max_length=40, required=False)

    def __init__(self, *args, agents, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agent"].queryset = agents


class MessageForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Message")
