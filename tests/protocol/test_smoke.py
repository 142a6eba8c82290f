from capflow.protocol.client import Client


def test_health_and_a_reserve_through_the_sync_client(live):
    server = live()
    with Client(server.endpoint, timeout_s=2) as c:
        assert c.health()["status"] == "ok"
        c.profile_create("alpha", "1000")
        r = c.allocation_reserve("alpha", "BTCUSDT", "250.5", client_request_id="k")
        assert r["amount"] == "250.50" and r["reused"] is False
        assert c.ledger_get("alpha")["available"] == "749.50"
