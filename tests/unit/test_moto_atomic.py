"""The local stack's moto decides conditional writes one at a time, as DynamoDB does."""

import threading

import boto3

from local.aws import start_moto_server

ROUNDS, WRITERS = 40, 6


def winners_of_one_round(leases, team: str) -> int:
    start, winners = threading.Barrier(WRITERS), []

    def take(writer: int) -> None:
        start.wait()
        if leases.acquire(team, f"writer{writer}", 60):
            winners.append(writer)

    threads = [threading.Thread(target=take, args=(writer,)) for writer in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return len(winners)


def test_only_one_of_several_simultaneous_conditional_writes_wins():
    from mailcore.adapters.dynamodb import DynamoAccountRevisions

    server, endpoint = start_moto_server()
    try:
        session = boto3.session.Session(
            aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        )
        client = session.client("dynamodb", endpoint_url=endpoint)
        client.create_table(
            TableName="state",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        )
        leases = DynamoAccountRevisions("state", client)
        winners_per_round = [winners_of_one_round(leases, f"team{n}") for n in range(ROUNDS)]
        assert winners_per_round == [1] * ROUNDS
    finally:
        server.stop()
