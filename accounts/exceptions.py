from common.errors import DomainError, InvalidInput, NotFound


class UserNotFound(NotFound):
    """No such user."""

    code = "user_not_found"


class UsernameTaken(InvalidInput):
    """That username is taken."""

    code = "username_taken"
    field = "username"


class ApiKeyNotFound(NotFound):
    """No such API key."""


class RoleChangeNotAllowed(DomainError):
    """Only a superuser changes a user's role."""

    code = "role_change_not_allowed"
    http_status = 403


class UserChangeNotAllowed(DomainError):
    """Only a superuser activates or deactivates a user."""

    code = "user_change_not_allowed"
    http_status = 403
