"""The Kafka topic and consumer-group names of design §8 (producers and consumers share them)."""

REQUESTS = "erasure.requests"
JOBS = "erasure.jobs"
EVENTS = "erasure.events"
DLQ = "erasure.requests.dlq"
PLANNER_GROUP = "erasure-planner"
EXCLUDER_GROUP = "erasure-excluder"
EXECUTOR_GROUP = "erasure-executors"
