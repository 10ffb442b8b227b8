"""Local services for development and tests: a KRaft Kafka broker (jars resolved with Maven) and an MLflow server."""
