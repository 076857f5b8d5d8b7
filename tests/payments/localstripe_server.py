"""Run localstripe (a fake Stripe server, PyPI) for the tests: bound to 127.0.0.1 on a free
port chosen by the kernel, printed on the first line of stdout, nothing written to disk, and
it exits by itself when its parent goes away (its stdin closes)."""

import os
import socket
import sys
import threading


def _exit_with_parent() -> None:
    sys.stdin.read()
    os._exit(0)


def main() -> None:
    from aiohttp import web
    from localstripe import server

    # localstripe pickles its whole store to /tmp after every POST; tests start it empty.
    server.store.dump_to_disk = lambda: None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue from now on, before the app starts accepting
    print(sock.getsockname()[1], flush=True)
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    web.run_app(server.app, sock=sock, print=None, access_log=None, handle_signals=True)


if __name__ == "__main__":
    main()
