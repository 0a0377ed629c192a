"""Outgoing email over SMTP (MIAOFA_SMTP_URL, e.g. smtp://127.0.0.1:1025)."""

import asyncio
import smtplib
from email.message import EmailMessage
from urllib.parse import unquote, urlparse


class Mailer:
    def __init__(self, smtp_url: str, sender: str) -> None:
        self.configured = bool(smtp_url)
        parsed = urlparse(smtp_url) if smtp_url else None
        self._host = (parsed.hostname or "") if parsed else ""
        self._port = parsed.port or (465 if parsed and parsed.scheme == "smtps" else 25) if parsed else 0
        self._tls = parsed.scheme == "smtps" if parsed else False
        self._user = unquote(parsed.username) if parsed and parsed.username else None
        self._password = unquote(parsed.password) if parsed and parsed.password else None
        self.sender = sender

    async def send(self, to: str, subject: str, body: str, html: str | None = None) -> None:
        """Send to exactly one recipient: `to` is the envelope's only RCPT, whatever the To header
        would parse into (`a@x.io,b@y.io` is one odd address here, never two recipients).
        With `html`, the message is multipart/alternative: the text part first, then the HTML."""
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
        await asyncio.to_thread(self._send, message, to)

    def _send(self, message: EmailMessage, to: str) -> None:
        smtp_class = smtplib.SMTP_SSL if self._tls else smtplib.SMTP
        with smtp_class(self._host, self._port, timeout=15) as smtp:
            if self._user:
                smtp.login(self._user, self._password or "")
            smtp.send_message(message, to_addrs=[to])
