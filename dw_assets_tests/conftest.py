"""Shared fixtures: one real stack per test session (own MariaDB, Tansu broker) on free ports.

Tests never touch a running `dw stack` (its ports are not used) and every server is stopped by PID at the end.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from dw_assets.settings import S3Settings, Settings, load_settings
from dw_assets.stack import Stack, StackConfig, find_free_port
from dw_assets.stack.s3 import LOCAL_KEY, MotoServer, ensure_bucket

# The product creates one partition per topic (Debezium's default); the suite runs three, for itself and the
# processes it starts, so per-partition files, offsets and ordering across partitions stay tested.
SUITE_ENV = {"DW_TOPIC_PARTITIONS": "3"}
os.environ.update(SUITE_ENV)


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Short path: MariaDB's unix socket path must stay under 107 bytes.
    return tmp_path_factory.mktemp("dw")


@pytest.fixture(scope="session")
def stack(stack_home: Path) -> Iterator[Stack]:
    cfg = StackConfig(home=stack_home, mariadb_port=find_free_port(), kafka_port=find_free_port())
    st = Stack(cfg)
    st.up()
    try:
        yield st
    finally:
        st.down()


@pytest.fixture(scope="session")
def stack_settings(stack: Stack) -> Settings:
    """Settings for the session's stack, ignoring any DW_* variables of the developer's shell."""
    return load_settings(env=dict(SUITE_ENV), home=stack.home)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("s3"), find_free_port())
    pid = server.start()
    try:
        yield server
    finally:
        server.stop(pid)


@pytest.fixture
def s3_settings(stack_settings: Settings, moto_server: MotoServer) -> Settings:
    """The session stack with landing and lake in a fresh bucket on the local S3 endpoint."""
    s3 = S3Settings(endpoint_url=moto_server.endpoint_url, region="us-east-1", access_key_id=LOCAL_KEY,
                    secret_access_key=LOCAL_KEY, allow_http=True)
    bucket = f"dw-test-{uuid.uuid4().hex[:8]}"
    ensure_bucket(bucket, **s3.boto3_kwargs())
    return replace(stack_settings, s3=s3, landing_url=f"s3://{bucket}/landing", lake_url=f"s3://{bucket}/lake")


def unique_client(prefix: str = "c") -> str:
    """A client name no other test uses (tests share one MariaDB server)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def sail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Sail Spark Connect server on a free port for the session; yields its remote (sc://127.0.0.1:port)."""
    from dw_assets.stack.sail import SailServer

    server = SailServer(tmp_path_factory.mktemp("sail"), find_free_port())
    pid = server.start()
    try:
        yield server.remote
    finally:
        server.stop(pid)
