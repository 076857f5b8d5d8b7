"""The embedded default's broker (config/broker.py): kombu's filesystem transport, with each
message written aside and renamed into place, so the worker never takes half a message."""

from queue import Empty

import pytest
from kombu import Connection

from config import broker


def _connection(folder) -> Connection:
    return Connection(
        "filesystem://localhost/",
        transport="config.broker:Transport",
        transport_options={
            "data_folder_in": str(folder / "messages"),
            "data_folder_out": str(folder / "messages"),
            "control_folder": str(folder / "control"),
        },
    )


def test_a_message_being_written_is_not_taken_and_arrives_whole_once_written(tmp_path, monkeypatch):
    """Given a reader polling the queue while a message is being written, then it finds
    nothing (upstream kombu hands it an empty file it cannot decode), and afterwards it gets
    the whole message exactly once; the folders were created on first use."""
    with _connection(tmp_path) as connection:
        channel = connection.default_channel
        seen_while_writing = []
        encode = broker.str_to_bytes

        def encode_while_polled(text):
            try:
                seen_while_writing.append(channel._get("default"))
            except Empty:
                seen_while_writing.append(None)
            return encode(text)

        monkeypatch.setattr(broker, "str_to_bytes", encode_while_polled)
        channel._put("default", {"body": "release milestone 7"})
        monkeypatch.undo()

        assert seen_while_writing == [None]
        assert channel._get("default") == {"body": "release milestone 7"}
        with pytest.raises(Empty):
            channel._get("default")
        assert sorted(path.name for path in (tmp_path / "messages").iterdir()) == []
