from common.errors import InvalidInput, NotFound


class UserNotFound(NotFound):
    """No such user."""

    code = "user_not_found"


class UsernameTaken(InvalidInput):
    """That username is taken."""

    code = "username_taken"
    field = "username"


class ApiKeyNotFound(NotFound):
    """No such API key."""
