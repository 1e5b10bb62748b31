#!/usr/bin/env python3
"""A real SMTP server for Herald's tests and demo, on aiosmtpd (PyPI): it speaks SMTP over
TCP like any relay, parses every accepted message with Python's e-mail package, and appends
one JSON line per message to OUT_DIR/messages.jsonl (with the raw message in OUT_DIR/raw/).

Faults are driven by OUT_DIR/control.json, read on every RCPT (write it atomically):
  {"reject": ["bad@x.test"]}            550 5.1.1 at RCPT for these addresses
  {"busy_until": 1767225600.5, "busy_code": 451}
                                         421/451 at RCPT until then (epoch seconds)
  {"delay_ms": 50}                       each DATA answered that much later (a real relay's pace)
  {"late_every": 20, "late_ms": 4000}    every 20th message accepted (written) at once, its 250
                                         answered 4 s later: past a client's time-out

  smtp_catcher.py --port 2525 --out DIR [--count-only]

--auth USER:PASSWORD: every session must log in (AUTH PLAIN/LOGIN, allowed without TLS on
loopback); a wrong password is answered 535.
--count-only (for benchmarks): parses and keeps nothing, only counts accepted messages into
OUT_DIR/count (every 1000 and at exit), so the server costs as little as it can.
"""
import argparse, asyncio, email, email.policy, json, logging, os, signal, time, warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Catcher:
    def __init__(self, out, count_only=False):
        self.out = out
        self.count_only = count_only
        self.count = 0
        os.makedirs(os.path.join(out, "raw"), exist_ok=True)
        self.log = open(os.path.join(out, "messages.jsonl"), "a", buffering=1)

    def control(self):
        try:
            with open(os.path.join(self.out, "control.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        control = self.control()
        if time.time() < float(control.get("busy_until", 0)):
            code = int(control.get("busy_code", 451))
            return f"{code} 4.3.2 busy, try again later"
        if address.lower() in [a.lower() for a in control.get("reject", [])]:
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.count_only:
            self.count += 1
            if self.count % 1000 == 0:
                self.write_count()
            return "250 2.0.0 OK queued"
        delay = float(self.control().get("delay_ms", 0))
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = {}
        for part in msg.walk():
            if part.get_content_maintype() == "multipart":
                continue
            parts.setdefault(part.get_content_type(), part.get_content())
        self.count += 1
        record = {
            "n": self.count,
            "mail_from": envelope.mail_from,
            "rcpt_to": envelope.rcpt_tos,
            "message_id": msg.get("Message-ID"),
            "from": str(msg.get("From")),
            "to": str(msg.get("To")),
            "subject": str(msg.get("Subject")),
            "content_type": msg.get_content_type(),
            "text": parts.get("text/plain"),
            "html": parts.get("text/html"),
            "list_unsubscribe": msg.get("List-Unsubscribe"),
            "list_unsubscribe_post": msg.get("List-Unsubscribe-Post"),
            "defects": [type(d).__name__ for d in msg.defects],
        }
        with open(os.path.join(self.out, "raw", f"{self.count}.eml"), "wb") as f:
            f.write(raw)
        self.log.write(json.dumps(record) + "\n")
        control = self.control()
        every = int(control.get("late_every", 0))
        if every > 0 and self.count % every == 0:
            await asyncio.sleep(float(control.get("late_ms", 0)) / 1000)
        return "250 2.0.0 OK queued"


    def write_count(self):
        with open(os.path.join(self.out, "count.tmp"), "w") as f:
            f.write(str(self.count))
        os.replace(os.path.join(self.out, "count.tmp"), os.path.join(self.out, "count"))


class Authenticator:
    def __init__(self, spec):
        user, _, password = spec.partition(":")
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user
            and auth_data.password == self.password
        )
        return AuthResult(success=ok, handled=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count-only", action="store_true")
    ap.add_argument("--auth", help="USER:PASSWORD every session must log in with")
    args = ap.parse_args()
    catcher = Catcher(args.out, args.count_only)
    auth = {}
    # AUTH without TLS is what the tests want on loopback; aiosmtpd warns about it each session.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    if args.auth:
        auth = dict(authenticator=Authenticator(args.auth), auth_required=True, auth_require_tls=False)
    controller = Controller(catcher, hostname=args.host, port=args.port, decode_data=False, **auth)
    controller.start()
    print(f"smtp catcher on {args.host}:{args.port}, messages in {args.out}/messages.jsonl", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()
    catcher.write_count()


if __name__ == "__main__":
    main()
