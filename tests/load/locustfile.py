"""A weighted mix of what Freya's services do, for Locust against any deployment.

    make loadtest                      # 60 s against http://127.0.0.1:8000, 20 users
    locust -f tests/load/locustfile.py --headless -u 50 -r 10 -t 5m --host https://freya.internal \\
           --csv report --html report.html

Set FREYA_LOADTEST_TOKEN when the service requires tokens (a token with read and write).
The data should come from `make seed`: users 1…N/200 exist, each with conversations; set
FREYA_LOADTEST_USERS to N/200 when the seed was not the default 1,000,000 messages.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

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
USERS = int(os.environ.get("FREYA_LOADTEST_USERS", "5000"))


class FreyaClient(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        if TOKEN:
            self.client.headers["Authorization"] = f"Bearer {TOKEN}"
        self.conversations: list[int] = []
        for _ in range(5):
            user_id = random.randint(1, USERS)
            response = self.client.get(
                f"/v1/users/{user_id}/conversations?limit=20", name="/v1/users/{id}/conversations"
            )
            if response.status_code == 200:
                self.conversations.extend(c["id"] for c in response.json()["items"])
        if not self.conversations:
            self.conversations = [1]

    @task(10)
    def page_through_a_conversation(self) -> None:
        conversation = random.choice(self.conversations)
        path = f"/v1/conversations/{conversation}/messages"
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
        conversation = random.choice(self.conversations)
        self.client.post(
            f"/v1/conversations/{conversation}/messages",
            json={"role": "user", "content": " ".join(random.choices(WORDS, k=12)), "topics": [random.choice(WORDS)]},
            name="/v1/conversations/{id}/messages [POST]",
        )

    @task(1)
    def post_a_batch(self) -> None:
        conversation = random.choice(self.conversations)
        batch = [
            {"role": random.choice(("user", "assistant")), "content": " ".join(random.choices(WORDS, k=20))}
            for _ in range(50)
        ]
        self.client.post(
            f"/v1/conversations/{conversation}/messages/batch",
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
