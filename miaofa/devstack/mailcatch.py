"""A local catch-all SMTP server for `miaofa up` (no SMTP_URL): every mail is saved, none goes out.

Each message becomes one file `data/mail/<time>-<n>-<recipient>.eml` (0600, in a 0700 dir: the
delivery mails hold keys). Open one with any mail client, or `cat` it.
Run alone: `python -m miaofa.devstack.mailcatch --port 1025 --dir data/mail`.
"""

import argparse
import os
import re
import signal
import threading
import time
from itertools import count
from pathlib import Path

from aiosmtpd.controller import Controller

from miaofa.devstack.secrets import make_private_dir


class MailDir:
    """aiosmtpd handler: one .eml file per recipient of each message."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._numbers = count(1)
        make_private_dir(directory)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's hook
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for rcpt in envelope.rcpt_tos:
            safe = re.sub(r"[^A-Za-z0-9@._-]", "_", rcpt)[:80]
            path = self.directory / f"{stamp}-{next(self._numbers):05d}-{safe}.eml"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(envelope.original_content or envelope.content)
        return "250 OK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("data/mail"))
    args = parser.parse_args()
    controller = Controller(MailDir(args.dir), hostname=args.host, port=args.port)
    controller.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"catching mail on smtp://{args.host}:{args.port} into {args.dir}", flush=True)
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
