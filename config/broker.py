"""The embedded default's Celery broker: kombu's filesystem transport, one message per file.

`make run` (and `make serve` without Redis) run a real Celery worker and beat beside Daphne
(config/serve.py); they need a broker that needs no server, and kombu ships one. Two things
are added here, nothing else:

- kombu writes a message file under its final name and then fills it, so the worker polling
  at that moment can take an empty or half-written file and fail to decode it
  (celery/kombu#1551, open). Here a message is written under a name the reader skips and
  renamed into place, which is atomic on one file system.
- the folders are created when a channel opens (kombu expects them to exist).
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for folder in {self.data_folder_in, self.data_folder_out, self.control_folder}:
            os.makedirs(folder, exist_ok=True)

    def _put(self, queue, payload, **kwargs):
        # The name kombu's reader looks for ("<ms>_<uuid>.<queue>.msg", oldest first); the
        # partial file starts with a dot, so its text after the first dot never equals
        # "<queue>.msg" and the reader leaves it alone.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
