from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "common"
    verbose_name = "API plumbing"

    def ready(self) -> None:
        from common import checks  # noqa: F401  (registers the system checks)
        from common.request_id import install_log_record_factory

        install_log_record_factory()
