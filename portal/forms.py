"""Portal forms: they parse input only; the services decide."""

from django import forms

from portal import payments_bridge


class FundForm(forms.Form):
    """Fund a milestone with one of the homeowner's saved payment methods. A second submit
    (double click, resubmitted page) charges nothing: the database allows one live funding
    payment per milestone and the service reports the conflict."""

    payment_method = forms.TypedChoiceField(coerce=int, label="Pay with")

    def __init__(self, *args, methods=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["payment_method"].choices = [(method.pk, str(method)) for method in methods]
        default = next((method.pk for method in methods if method.is_default), None)
        if default is not None:
            self.fields["payment_method"].initial = default


class PaymentMethodAddForm(forms.Form):
    """Embedded mode: a sandbox test token chosen from a list (card data never reaches us)."""

    token = forms.ChoiceField(
        label="Test card",
        choices=payments_bridge.SANDBOX_TOKENS,
        widget=forms.RadioSelect,
        initial="pm_card_visa",
    )


class StripePaymentMethodForm(forms.Form):
    """Stripe mode: the `pm_...` id Stripe.js created from the card Element in the browser;
    the card number went to Stripe, never here."""

    token = forms.RegexField(regex=r"^pm_[A-Za-z0-9_]{3,250}$", label="Stripe payment method")


def payment_method_form(data=None, *, stripe: bool):
    return StripePaymentMethodForm(data) if stripe else PaymentMethodAddForm(data)


class NotificationPreferenceForm(forms.Form):
    """Which notifications also come by e-mail (the portal list always shows them all)."""

    email_enabled = forms.BooleanField(required=False, label="Send me e-mails")
    email_kinds = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="E-mail me about",
    )

    def __init__(self, *args, kinds=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["email_kinds"].choices = list(kinds)
