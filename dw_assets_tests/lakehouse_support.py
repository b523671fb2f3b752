"""Shared pieces of the lakehouse tests: a tiny model of its own (the lake must work for ANY model) and rows."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dw_assets.model import StandardModel, load_model

# Covers the type mapping (DECIMAL, DATETIME(6), TIMESTAMP(6), DATE, TINYINT(1), BLOB, JSON, ENUM), a mixed-case
# column (quoting in SQL expressions), a composite key, SCD2 on one table and CDF with NOT NULL columns.
TINY_MODEL = """
version: "test-1"
tables:
  - name: accounts
    options: {change_data_feed: true, column_mapping: name, scd2: true}
    columns:
      - {name: account_id, type: BIGINT, primary_key: true}
      - {name: displayName, type: VARCHAR(100), nullable: false}
      - {name: balance, type: "DECIMAL(14,2)", nullable: false}
      - {name: opened_at, type: DATETIME(6), nullable: false}
      - {name: updated_at, type: TIMESTAMP(6), nullable: true}
      - {name: birthday, type: DATE, nullable: true}
      - {name: active, type: TINYINT(1), nullable: false}
      - {name: avatar, type: BLOB}
      - {name: attrs, type: JSON}
      - {name: level, type: "ENUM('a','b')"}
  - name: entries
    options: {change_data_feed: true, scd2: false}
    columns:
      - {name: account_id, type: BIGINT, primary_key: true, references: accounts.account_id}
      - {name: line_no, type: SMALLINT UNSIGNED, primary_key: true}
      - {name: amount, type: "DECIMAL(10,2)", nullable: false}
"""
KEYS = {"accounts": ["account_id"], "entries": ["account_id", "line_no"]}


def tiny_model(tmp_path: Path) -> StandardModel:
    p = tmp_path / "model.yaml"
    p.write_text(TINY_MODEL)
    return load_model(p)


def account(i: int, balance: str = "1.10", **kw: Any) -> dict[str, Any]:
    """A row image rendered like Debezium's JSON converter."""
    row = {"account_id": i, "displayName": f"name {i}", "balance": balance,
           "opened_at": "2024-01-02T03:04:05.123456", "updated_at": "2024-01-02T03:04:05.654321Z",
           "birthday": "2000-02-29", "active": 1, "avatar": "aGVsbG8=", "attrs": '{"a": [1, 2]}', "level": "a"}
    row.update(kw)
    return row


def entry(account_id: int, line_no: int, amount: str = "9.99") -> dict[str, Any]:
    return {"account_id": account_id, "line_no": line_no, "amount": amount}
