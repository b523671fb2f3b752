"""Connection settings for every stage, from environment variables over the local stack's state file.

The only module that reads the environment. Stages receive a `Settings`; they never read os.environ themselves,
so the same code runs against the local stack, an existing MariaDB, a Confluent Cloud cluster and real S3.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import quote, unquote, urlparse

DEFAULT_MARIADB_PORT = 13306
DEFAULT_KAFKA_PORT = 19092
DEFAULT_TOPIC_PREFIX = "dw"
STATE_FILE = "stack.json"

if TYPE_CHECKING:  # the model package pulls in YAML parsing: import it only where a command needs the model
    from dw_assets.model import StandardModel


class SettingsError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class MariaDBSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_MARIADB_PORT
    admin_user: str = "dw_admin"
    admin_password: str = ""
    cdc_user: str = "dw_cdc"
    cdc_password: str = ""
    server_id: int = 1  # of the source server (informational; the CDC client uses its own)

    def url(self, role: str = "admin", with_password: bool = False) -> str:
        user, pw = (self.admin_user, self.admin_password) if role == "admin" else (self.cdc_user, self.cdc_password)
        secret = f":{quote(pw, safe='')}" if with_password else (":***" if pw else "")
        return f"mysql://{quote(user, safe='')}{secret}@{self.host}:{self.port}"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    # One partition per topic, as Debezium's topic creation defaults to: a client table's changes are one
    # ordered stream; more partitions multiply the landing files and the broker's record batches (at 2,000
    # changes/s over 10 clients, 3 partitions: commit -> silver p50 22-25 s; 1: 10-12 s). A large client gets
    # more with its `topic_partitions` option.
    partitions: int = 1
    replication_factor: int = 1
    # Tansu answers a group join only after session.timeout.ms/2: keep it short locally.
    session_timeout_ms: int = 6000
    # Tansu's CPU follows the record batches it stores and serves, not the bytes: one client's 24 partitions
    # get ~8 changes/s each at 2,000/s over 10 clients, so at a 20 ms linger every change is a batch of its own
    # and the broker took 77 % of a core (with 10 landing consumers at 100 ms); at 500/500 ms, 22 %. The price
    # is up to half a second per hop, inside a freshness budget of seconds.
    linger_ms: int = 500  # capture's producer
    fetch_wait_ms: int = 500  # the landing consumers' fetch.wait.max.ms

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by producers, consumers and admin clients."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password
        return conf


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None  # None = AWS itself
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    allow_http: bool = False

    def storage_options(self) -> dict[str, str]:
        """Options for deltalake / object_store."""
        opts: dict[str, str] = {"AWS_REGION": self.region}
        if self.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.access_key_id:
            opts["AWS_ACCESS_KEY_ID"] = self.access_key_id
        if self.secret_access_key:
            opts["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        if self.allow_http or (self.endpoint_url or "").startswith("http://"):
            opts["AWS_ALLOW_HTTP"] = "true"
        # Conditional PUT commits on S3: no external lock provider needed.
        opts["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
        return opts

    def boto3_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            kw["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            kw["aws_access_key_id"] = self.access_key_id
        if self.secret_access_key:
            kw["aws_secret_access_key"] = self.secret_access_key
        return kw


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: Path(".dw").resolve())
    mariadb: MariaDBSettings = field(default_factory=MariaDBSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    landing_url: str = ""
    lake_url: str = ""
    reports_dir: str = ""
    dagster_home: str = ""
    control_db: str = "dw_control"
    model_path: str | None = None  # None = the shipped standard model (DW_MODEL_PATH, or `dw --model`)
    reports_sql_dir: str | None = None  # report SQL folder instead of the one the model file names
    alert_webhook_url: str | None = None  # check alerts are POSTed here (JSON, or Slack's payload)
    alert_payload_format: str = "json"  # json | slack
    # Kafka-lag sensor: land a client at this many unlanded records or this age of its oldest one (seconds),
    # packing clients into this many shards (one landing run per shard at a time).
    landing_lag_records: int = 10_000
    landing_lag_seconds: float = 30.0
    landing_shards: int = 16
    # Tables of one client applied at once (bronze appends and silver MERGEs release the GIL).
    apply_threads: int = 2
    # A sensor-started ingest run keeps landing and applying its clients while they still have lag, for up to
    # this many seconds: a new run costs a process start and a sensor tick (~20-30 s on two loaded cores).
    ingest_drain_seconds: float = 120.0
    # `dw ingest run` writes a heartbeat every second; older than this, the lag sensor takes its clients over.
    ingest_heartbeat_stale_seconds: float = 15.0
    # After a batch changed a client's silver, the ingest service rebuilds its reports within this many seconds.
    reports_debounce_seconds: float = 10.0
    # The reconciliation check repairs the differing keys it confirms (`dw reconcile --repair`) instead of only
    # alerting.
    reconcile_repair: bool = False
    # The producer's Debezium settings, used only where a value's text is ambiguous (lakehouse/decoding.py):
    # integer TIME/DATETIME units and digits-only scale-0 DECIMAL strings.
    cdc_time_precision_mode: str = "adaptive_time_microseconds"
    cdc_decimal_handling_mode: str = "string"
    # ---- engine and Dagster storage (issue #18) ----
    # The apply step's engine: local (deltalake in this process) or spark (Spark Connect at spark_remote, e.g.
    # Sail from `dw stack up --spark`, or Databricks through Pipes). dagster_storage: sqlite | postgres.
    engine: str = "local"
    spark_remote: str | None = None
    spark_catalog: str | None = None  # Unity Catalog catalog; None: path-addressed Delta tables in lake_url
    dagster_storage: str = "sqlite"

    # ---- derived locations -------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / STATE_FILE

    # ---- the model: resolved here and nowhere else ---------------------------------------------------------
    def standard_model(self) -> "StandardModel":
        """The model every command, asset, check, sensor, report and the demo follow (`--model` /
        DW_MODEL_PATH, else the shipped one), with its report folder (DW_REPORTS_SQL_DIR overrides the model's)."""
        from dw_assets.model import load_model

        model = load_model(self.model_path)
        if self.reports_sql_dir:
            folder = Path(self.reports_sql_dir).resolve()
            if not folder.is_dir():
                raise SettingsError(f"DW_REPORTS_SQL_DIR={self.reports_sql_dir!r} is not a folder")
            model = replace(model, reports_dir=folder)
        return model

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a process this one starts (Dagster, a service): same state directory and model."""
        env = dict(os.environ if base is None else base)
        env["DW_HOME"] = str(self.home)
        for name, value in (("DW_MODEL_PATH", self.model_path), ("DW_REPORTS_SQL_DIR", self.reports_sql_dir)):
            if value:
                env[name] = value
        return env

    def with_overrides(self, **kw: Any) -> "Settings":
        return replace(self, **kw)

    def redacted(self) -> dict[str, Any]:
        """A JSON-able view with every password replaced, for logs and `status` without --show-secrets."""
        d = self.as_dict()
        for section in ("mariadb", "kafka", "s3"):
            for k in list(d[section]):
                if ("password" in k or "secret" in k) and d[section][k]:
                    d[section][k] = "***"
        return d

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["home"] = str(self.home)
        return d


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default)."""
    raw = env.get(name) or choices[0]
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def parse_mariadb_url(url: str, var: str) -> dict[str, Any]:
    """mysql://user:password@host:port -> parts; the error names the variable, never the password."""
    p = urlparse(url)
    if p.scheme not in ("mysql", "mariadb") or not p.hostname:
        raise SettingsError(f"{var} must look like mysql://user:password@host:port (got scheme {p.scheme!r})")
    try:
        port = p.port or 3306
    except ValueError:
        raise SettingsError(f"{var} has an invalid port") from None
    return {
        "host": p.hostname,
        "port": port,
        "user": unquote(p.username or ""),
        "password": unquote(p.password or ""),
    }


def load_settings(env: Mapping[str, str] | None = None, home: str | Path | None = None) -> Settings:
    """Build settings: defaults < the local stack's state file (`$DW_HOME/stack.json`) < environment variables."""
    env = os.environ if env is None else env
    home_path = Path(home or env.get("DW_HOME") or ".dw").resolve()
    state: dict[str, Any] = {}
    sf = home_path / STATE_FILE
    if sf.exists():
        try:
            state = json.loads(sf.read_text())
        except json.JSONDecodeError as e:
            raise SettingsError(f"stack state file {sf} is not valid JSON: {e}") from None
    st_m = state.get("mariadb", {})
    st_k = state.get("kafka", {})
    st_s3 = state.get("s3", {})

    m = MariaDBSettings(
        host=st_m.get("host", "127.0.0.1"),
        port=int(st_m.get("port", DEFAULT_MARIADB_PORT)),
        admin_user=st_m.get("admin_user", "dw_admin"),
        admin_password=st_m.get("admin_password", ""),
        cdc_user=st_m.get("cdc_user", "dw_cdc"),
        cdc_password=st_m.get("cdc_password", ""),
    )
    if env.get("DW_MARIADB_URL"):
        u = parse_mariadb_url(env["DW_MARIADB_URL"], "DW_MARIADB_URL")
        m = replace(m, host=u["host"], port=u["port"], admin_user=u["user"] or m.admin_user, admin_password=u["password"])
    if env.get("DW_MARIADB_CDC_URL"):
        u = parse_mariadb_url(env["DW_MARIADB_CDC_URL"], "DW_MARIADB_CDC_URL")
        m = replace(m, cdc_user=u["user"] or m.cdc_user, cdc_password=u["password"])

    k = KafkaSettings(
        bootstrap=env.get("DW_KAFKA_BOOTSTRAP") or st_k.get("bootstrap", f"127.0.0.1:{DEFAULT_KAFKA_PORT}"),
        security_protocol=env.get("DW_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        sasl_mechanism=env.get("DW_KAFKA_SASL_MECHANISM") or None,
        sasl_username=env.get("DW_KAFKA_SASL_USERNAME") or None,
        sasl_password=env.get("DW_KAFKA_SASL_PASSWORD") or None,
        topic_prefix=env.get("DW_TOPIC_PREFIX", DEFAULT_TOPIC_PREFIX),
        partitions=_int(env, "DW_TOPIC_PARTITIONS", 1),
        replication_factor=_int(env, "DW_TOPIC_REPLICATION_FACTOR", 1),
        session_timeout_ms=_int(env, "DW_KAFKA_SESSION_TIMEOUT_MS", 6000),
        linger_ms=_int(env, "DW_KAFKA_LINGER_MS", 500),
        fetch_wait_ms=_int(env, "DW_KAFKA_FETCH_WAIT_MS", 500),
    )
    s3 = S3Settings(
        endpoint_url=env.get("DW_S3_ENDPOINT_URL") or st_s3.get("endpoint_url"),
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or st_s3.get("region", "us-east-1"),
        access_key_id=env.get("AWS_ACCESS_KEY_ID") or st_s3.get("access_key_id"),
        secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or st_s3.get("secret_access_key"),
        allow_http=(env.get("AWS_ALLOW_HTTP", "").lower() == "true") or bool(st_s3.get("allow_http", False)),
    )
    landing = env.get("DW_LANDING_URL") or state.get("landing", {}).get("url") or str(home_path / "landing")
    lake = env.get("DW_LAKE_URL") or state.get("lake", {}).get("url") or str(home_path / "lake")
    reports = env.get("DW_REPORTS_DIR") or state.get("reports", {}).get("dir") or str(home_path / "reports")
    dagster_home = env.get("DAGSTER_HOME") or state.get("dagster", {}).get("home") or str(home_path / "dagster")
    return Settings(
        home=home_path,
        mariadb=m,
        kafka=k,
        s3=s3,
        landing_url=landing,
        lake_url=lake,
        reports_dir=reports,
        dagster_home=dagster_home,
        control_db=env.get("DW_CONTROL_DB", "dw_control"),
        model_path=env.get("DW_MODEL_PATH") or None,
        reports_sql_dir=env.get("DW_REPORTS_SQL_DIR") or None,
        alert_webhook_url=env.get("DW_ALERT_WEBHOOK_URL") or None,
        alert_payload_format=env.get("DW_ALERT_PAYLOAD_FORMAT", "json"),
        landing_lag_records=_int(env, "DW_LANDING_LAG_RECORDS", 10_000),
        landing_lag_seconds=_float(env, "DW_LANDING_LAG_SECONDS", 30.0),
        landing_shards=_int(env, "DW_LANDING_SHARDS", 16),
        apply_threads=_int(env, "DW_APPLY_THREADS", 2),
        ingest_drain_seconds=_float(env, "DW_INGEST_DRAIN_SECONDS", 120.0),
        ingest_heartbeat_stale_seconds=_float(env, "DW_INGEST_HEARTBEAT_STALE_SECONDS", 15.0),
        reports_debounce_seconds=_float(env, "DW_REPORTS_DEBOUNCE_SECONDS", 10.0),
        reconcile_repair=env.get("DW_RECONCILE_REPAIR", "0").strip().lower() in ("1", "true", "yes"),
        cdc_time_precision_mode=_choice(env, "DW_CDC_TIME_PRECISION_MODE",
                                        ("adaptive_time_microseconds", "adaptive", "connect")),
        cdc_decimal_handling_mode=_choice(env, "DW_CDC_DECIMAL_HANDLING_MODE", ("string", "precise", "double")),
        engine=_choice(env, "DW_ENGINE", ("local", "spark")),
        spark_remote=env.get("DW_SPARK_REMOTE") or state.get("spark", {}).get("remote") or None,
        spark_catalog=env.get("DW_SPARK_CATALOG") or None,
        dagster_storage=_choice(env, "DW_DAGSTER_STORAGE", ("sqlite", "postgres")),
    )
