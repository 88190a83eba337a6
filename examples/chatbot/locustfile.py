"""Load the chat service with Locust (for teams that already use it).

    python -m examples.chatbot --port 8080          # the service (simulated fleet)
    locust -f examples/chatbot/locustfile.py --host http://127.0.0.1:8080 \\
        --headless -u 50 -r 10 -t 60s

Locust runs a closed loop of users (each waits for its answer before asking again),
so a slow service lowers the offered load; ``critpath loadtest --url
http://127.0.0.1:8080/chat --rate R`` keeps the arrival rate open-loop instead. Each
user reports ``/chat first draft`` (time to the first draft event) and ``/chat final``
(time to the final event); Locust's own entry for the POST (``/chat headers``) times
only the response headers of the stream.
"""

from __future__ import annotations

import json
import random
import time

from locust import HttpUser, between, task  # type: ignore[import-not-found]

QUESTIONS = [
    "Why does my deploy fail after the upgrade?",
    "How do I rotate the API key?",
    "What changed in the latest release?",
    "Why is the dashboard slow in the morning?",
]


class ChatUser(HttpUser):  # type: ignore[misc]
    wait_time = between(0.5, 2.0)

    @task
    def chat(self) -> None:
        start = time.perf_counter()
        first = None
        body = {"message": random.choice(QUESTIONS)}
        with self.client.post("/chat", json=body, stream=True, catch_response=True,
                              name="/chat headers") as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            event = ""
            for raw in response.iter_lines():
                line = raw.decode() if isinstance(raw, bytes) else raw
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "draft" and first is None:
                        first = time.perf_counter() - start
                        self._report("/chat first draft", first)
                    elif event == "error":
                        response.failure(json.loads(line[6:]).get("message", "error"))
                        return
                    elif event == "final":
                        self._report("/chat final", time.perf_counter() - start)
                        response.success()
                        return
            response.failure("the stream ended without a final event")

    def _report(self, name: str, seconds: float) -> None:
        self.environment.events.request.fire(
            request_type="SSE", name=name, response_time=seconds * 1000, response_length=0,
            exception=None, context={},
        )  # fmt: skip
