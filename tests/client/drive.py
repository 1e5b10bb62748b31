"""Drives Herald through a client generated from its served OpenAPI document by
openapi-python-client (PyPI), the way an integrating team would: seed 001's request flow, then
customers and a campaign. Exits non-zero, saying where, if anything does not go as documented.

    drive.py BASE_URL API_KEY        (the generated package `herald_client` on PYTHONPATH)
"""
import sys
import time

from herald_client import AuthenticatedClient
from herald_client.api.campaigns import create_campaign, get_campaign
from herald_client.api.customers import put_customers
from herald_client.api.requests import create_request, get_request, process_request
from herald_client.models.customer_batch import CustomerBatch
from herald_client.models.message import Message
from herald_client.models.message_type import MessageType
from herald_client.models.new_campaign import NewCampaign


def wait(what, check, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    sys.exit(f"timed out waiting for {what}")


def main(base, key):
    client = AuthenticatedClient(base_url=base, token=key, raise_on_unexpected_status=True)

    # Seed 001: create, process, read until sent.
    created = create_request.sync_detailed(client=client, body=Message(
        to="ana@example.com", message="Hola Ana", type_=MessageType.EMAIL))
    assert created.status_code == 201, created
    request_id = created.parsed.id
    processed = process_request.sync_detailed(client=client, id=request_id)
    assert processed.status_code == 202, processed
    status = wait("the request to be sent", lambda: (
        lambda r: r.parsed.status.value if r.parsed.status.value in ("sent", "failed") else None
    )(get_request.sync_detailed(client=client, id=request_id)))
    assert status == "sent", status
    print(f"request {request_id}: {status}")

    # A bad body is a documented 422 naming the field.
    bad = create_request.sync_detailed(client=client, body=Message(
        to=" ", message="x", type_=MessageType.SMS))
    assert bad.status_code == 422 and bad.parsed.field == "to", bad

    # Customers and a campaign.
    ids = [f"gen{i}" for i in range(20)]
    customers = CustomerBatch.from_dict({"customers": [
        {"id": c, "name": f"Cliente {c}", "contacts": {"email": f"{c}@example.com"},
         "consent": {"email": True}, "time_zone": "Europe/Madrid", "language": "es"} for c in ids]})
    stored = put_customers.sync_detailed(client=client, body=customers)
    assert stored.status_code == 200 and stored.parsed.stored == 20, stored
    campaign = NewCampaign.from_dict({
        "id": "generated-client", "name": "From a generated client",
        "template": "Hi {{ name }}", "email": {"subject": "For you, {{ name }}"},
        "translations": {"es": {"template": "Hola {{ name }}"}},
        "channels": ["email"], "confirmation_timeout_ms": {"email": 10000},
        "audience": {"customer_ids": ids}})
    launched = create_campaign.sync_detailed(client=client, body=campaign)
    assert launched.status_code == 202, launched
    report = wait("the campaign to complete", lambda: (
        lambda r: r.parsed if r.parsed.status.value == "completed" else None
    )(get_campaign.sync_detailed(client=client, id="generated-client")))
    delivered = report.counts["delivered"]
    assert delivered == 20, report
    print(f"campaign generated-client: completed, {delivered} delivered")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
