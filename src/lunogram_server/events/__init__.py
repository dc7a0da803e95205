"""The event pipeline: durable ingest into an inbox, workers that apply events to profile histories, match
broadcasts fanned out in bounded steps, and the subscriber interface later features plug into."""
