#!/usr/bin/env python3
"""A real SMTP server for Herald's tests and demo, on aiosmtpd (PyPI): it speaks SMTP over
TCP like any relay, parses every accepted message with Python's e-mail package, and appends
one JSON line per message to OUT_DIR/messages.jsonl (with the raw message in OUT_DIR/raw/).

Faults are driven by OUT_DIR/control.json, read on every RCPT (write it atomically):
  {"reject": ["bad@x.test"]}            550 5.1.1 at RCPT for these addresses
  {"busy_until": 1767225600.5, "busy_code": 451}
                                         421/451 at RCPT until then (epoch seconds)
  {"delay_ms": 50}                       each DATA answered that much later (a real relay's pace)

  smtp_catcher.py --port 2525 --out DIR
"""
import argparse, asyncio, email, email.policy, json, os, signal, time

from aiosmtpd.controller import Controller


class Catcher:
    def __init__(self, out):
        self.out = out
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
        return "250 2.0.0 OK queued"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    catcher = Catcher(args.out)
    controller = Controller(catcher, hostname=args.host, port=args.port, decode_data=False)
    controller.start()
    print(f"smtp catcher on {args.host}:{args.port}, messages in {args.out}/messages.jsonl", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
