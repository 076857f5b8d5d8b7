"""Every write in escrow. Import from here: `from escrow import services`."""

from escrow.services.details import milestone_update_details, project_update_details
from escrow.services.freezes import (
    milestone_freeze,
    milestone_settle_dispute,
    milestone_unfreeze,
)
from escrow.services.funding import (
    FundingBatch,
    milestone_fund_start,
    milestone_funded,
    milestone_funded_check,
    milestone_funded_locked,
    milestone_funding_failed,
)
from escrow.services.holds import (
    milestone_refund_hold,
    milestone_refund_hold_return,
    milestone_refund_partial,
)
from escrow.services.milestones import (
    milestone_approve,
    milestone_auto_release_due,
    milestone_cancel,
    milestone_refund,
    milestone_refund_locked,
    milestone_request_inspection,
    milestone_submit,
    transition,
)
from escrow.services.projects import project_cancel, project_create, project_sign

__all__ = [
    "FundingBatch",
    "milestone_approve",
    "milestone_auto_release_due",
    "milestone_cancel",
    "milestone_freeze",
    "milestone_fund_start",
    "milestone_funded",
    "milestone_funded_check",
    "milestone_funded_locked",
    "milestone_funding_failed",
    "milestone_refund",
    "milestone_refund_hold",
    "milestone_refund_hold_return",
    "milestone_refund_locked",
    "milestone_refund_partial",
    "milestone_request_inspection",
    "milestone_settle_dispute",
    "milestone_submit",
    "milestone_unfreeze",
    "milestone_update_details",
    "project_cancel",
    "project_create",
    "project_sign",
    "project_update_details",
    "transition",
]
