from common.errors import Conflict, DomainError, IllegalTransition, InvalidInput, NotFound

__all__ = ["IllegalTransition"]


class ProjectNotFound(NotFound):
    """No such project."""

    code = "not_found"


class MilestoneNotFound(NotFound):
    """No such milestone."""

    code = "not_found"


class NotAllowed(DomainError):
    """The actor is a party but not the one who may do this. Answered as 403. Not a NotFound:
    a door that turns NotFound into 404 must not hide a refusal as a missing object (the
    objects an actor may not see raise ProjectNotFound / MilestoneNotFound instead)."""

    code = "permission_denied"
    http_status = 403


class ProjectNotActive(Conflict):
    """The project must be signed by both parties (active) first."""

    code = "project_not_active"


class InsufficientFunds(Conflict):
    """A restricted ledger account would go negative."""

    code = "insufficient_funds"


class UnbalancedEntry(ValueError):
    """A journal entry's legs do not sum to zero (a programming error, never user input)."""


class FundingMismatch(Conflict):
    """The funding does not match the milestone's amount or currency."""

    code = "funding_mismatch"


class InvalidProject(InvalidInput):
    """The project is not valid."""
