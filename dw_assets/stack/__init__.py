"""The local stack of real services every stage runs on: MariaDB, a Kafka-protocol broker, S3, the lake."""
from .process import ServiceError, find_free_port
from .stack import Stack, StackConfig

__all__ = ["ServiceError", "Stack", "StackConfig", "find_free_port"]
