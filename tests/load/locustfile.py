"""A weighted mix of what Freya's services do, for Locust against any deployment, on any data.

    make loadtest                      # 60 s against http://127.0.0.1:8000, 20 users
    locust -f tests/load/locustfile.py --headless -u 50 -r 10 -t 5m --host https://freya.internal \\
           --csv report --html report.html

Set FREYA_LOADTEST_TOKEN when the service requires tokens (a token with read and write).

Nothing is assumed about the data: each simulated client creates a user and a conversation of
its own (so it works on an empty database), and learns which conversations and topics exist by
asking the API, as a client would: topics from ``GET /v1/topics``, conversations from the
messages those topics tag and from a search. With `make seed` data it reads those, deep
conversations included. Every request is expected to succeed: a failure is a failure.
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any, ClassVar

import requests
from locust import HttpUser, between, events, task
from locust.env import Environment

WORDS = [
    "flights",
    "lisbon",
    "hotel",
    "recipe",
    "python",
    "database",
    "weather",
    "budget",
    "meeting",
    "music",
    "train",
    "museum",
    "coffee",
]
TOKEN = os.environ.get("FREYA_LOADTEST_TOKEN")


class Known:
    """What exists, learned once per Locust process and shared by its simulated clients."""

    conversations: ClassVar[list[int]] = []
    topics: ClassVar[list[int]] = []
    learned: ClassVar[bool] = False


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}


@events.test_start.add_listener
def learn_the_data(environment: Environment, **_: object) -> None:
    """Ask the API what is there: topics, and the conversations of messages they tag or a search finds."""
    if environment.host is None or Known.learned:
        return
    # Locust's own client belongs to a simulated user; this runs once, before them (requests
    # comes with Locust).
    with requests.Session() as http:
        http.headers.update(_headers())

        def get(path: str, **params: object) -> Any:
            response = http.get(environment.host + path, params=params, timeout=30)
            response.raise_for_status()
            return response.json()["items"]

        Known.topics = [t["id"] for t in get("/v1/topics", limit=200)]
        conversations: set[int] = set()
        for topic in Known.topics[:20]:
            items = get(f"/v1/topics/{topic}/messages", limit=200, fields="conversation_id")
            conversations.update(m["conversation_id"] for m in items)
        for word in WORDS:
            conversations.update(
                m["conversation_id"] for m in get("/v1/search/messages", q=word, limit=50, sort="recent")
            )
    Known.conversations = sorted(conversations)
    Known.learned = True
    print(f"load test: {len(Known.conversations)} conversations and {len(Known.topics)} topics found", flush=True)


class FreyaClient(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        self.client.headers.update(_headers())
        user = self.client.post(
            "/v1/users",
            json={"email": f"load-{uuid.uuid4().hex}@example.com", "name": "Load test"},
            name="/v1/users [POST]",
        )
        user.raise_for_status()
        conversation = self.client.post(
            "/v1/conversations", json={"user_id": user.json()["id"], "title": "Load test"}, name="/v1/conversations"
        )
        conversation.raise_for_status()
        self.own_conversation: int = conversation.json()["id"]

    def a_conversation(self) -> int:
        """A conversation that exists: mostly one the data had, sometimes this client's own."""
        if Known.conversations and random.random() < 0.8:
            return random.choice(Known.conversations)
        return self.own_conversation

    @task(10)
    def page_through_a_conversation(self) -> None:
        path = f"/v1/conversations/{self.a_conversation()}/messages"
        cursor = None
        for _ in range(random.randint(1, 4)):
            params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
            response = self.client.get(path, params=params, name="/v1/conversations/{id}/messages")
            if response.status_code != 200:
                return
            cursor = response.json()["next_cursor"]
            if cursor is None:
                return

    @task(4)
    def post_a_message(self) -> None:
        self.client.post(
            f"/v1/conversations/{self.a_conversation()}/messages",
            json={"role": "user", "content": " ".join(random.choices(WORDS, k=12)), "topics": [random.choice(WORDS)]},
            name="/v1/conversations/{id}/messages [POST]",
        )

    @task(1)
    def post_a_batch(self) -> None:
        batch = [
            {"role": random.choice(("user", "assistant")), "content": " ".join(random.choices(WORDS, k=20))}
            for _ in range(50)
        ]
        self.client.post(
            f"/v1/conversations/{self.a_conversation()}/messages/batch",
            json={"messages": batch},
            name="/v1/conversations/{id}/messages/batch",
        )

    @task(4)
    def search(self) -> None:
        query = " ".join(random.sample(WORDS, k=random.randint(1, 2)))
        self.client.get("/v1/search/messages", params={"q": query, "limit": 20}, name="/v1/search/messages")

    @task(2)
    def topics(self) -> None:
        prefix = random.choice(WORDS)[:3]
        response = self.client.get("/v1/topics", params={"prefix": prefix}, name="/v1/topics?prefix")
        if response.status_code == 200 and response.json()["items"]:
            topic = random.choice(response.json()["items"])
            self.client.get(f"/v1/topics/{topic['id']}/messages", name="/v1/topics/{id}/messages")
