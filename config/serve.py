"""`make serve`: several Daphne processes sharing one listening socket.

The socket is bound here and handed to each child with `--fd`, so the kernel spreads
connections across them. A child that dies is restarted (with a short pause); SIGINT/SIGTERM
stop them all.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from config import daphne_flags


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 2)))
    args = parser.parse_args()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.host, args.port))
    listener.listen(2048)
    listener.set_inheritable(True)
    fd = listener.fileno()
    daphne = os.path.join(os.path.dirname(sys.executable), "daphne")
    command = [
        daphne,
        *daphne_flags.flags(),
        "--fd",
        str(fd),
        "--proxy-headers",
        "config.asgi:application",
    ]

    def spawn() -> subprocess.Popen:
        return subprocess.Popen(command, pass_fds=(fd,))

    children = [spawn() for _ in range(max(1, args.workers))]
    print(
        f"serving on http://{args.host}:{args.port} with {len(children)} Daphne processes",
        flush=True,
    )
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for index, child in enumerate(children):
            if child.poll() is not None and not stopping:
                print(f"daphne {child.pid} exited ({child.returncode}); restarting", flush=True)
                time.sleep(0.5)
                children[index] = spawn()
        time.sleep(0.2)
    for child in children:
        child.terminate()
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
