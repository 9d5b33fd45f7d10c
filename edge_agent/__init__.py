"""Edge SDK and agent: head runtime, early exit, routing, session stream client, result cache,
encrypted replay queue, telemetry and the `aiml021 edge` CLI."""
