from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=True, help_text="Used for password resets; never shown to others.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class KeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “laptop” or “nightly batch”.")
    scopes = forms.MultipleChoiceField(
        choices=[
            ("read", "read — browse the catalog and your private models"),
            ("predict", "predict — run models"),
            ("upload", "upload — create models and versions"),
        ],
        widget=forms.CheckboxSelectMultiple,
        initial=["read", "predict"],
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (optional, UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )
    requests_per_minute = forms.IntegerField(
        required=False,
        min_value=0,
        label="Cap: requests per minute (optional)",
        help_text="Keeps this key below your own limit.",
    )
    requests_per_day = forms.IntegerField(
        required=False, min_value=0, label="Cap: requests per day (optional)"
    )
