from django.db import models


class PaymentDueReminder(models.Model):
    """One reminder to the homeowner that a milestone is due to be funded: once while the due
    date approaches and once when it has passed, per due date (a changed due date reminds
    again). The unique constraint is what makes the beat task safe to run at any cadence."""

    class Kind(models.TextChoices):
        UPCOMING = "upcoming"
        OVERDUE = "overdue"

    milestone = models.ForeignKey(
        "escrow.Milestone", on_delete=models.CASCADE, related_name="payment_due_reminders"
    )
    due_date = models.DateField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["milestone", "due_date", "kind"], name="payment_due_reminder_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} reminder for milestone {self.milestone_id} due {self.due_date}"
