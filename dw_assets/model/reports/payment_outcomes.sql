/*---
title: Payment outcomes
description: >
  Payments per method and currency by outcome: succeeded (captured), failed, refunded (captured, then paid back)
  and pending (authorized only); captured and refunded amounts; success rate = (succeeded + refunded) /
  (succeeded + refunded + failed); refund rate = refunded / (succeeded + refunded); and payments that
  succeeded after an earlier failed attempt on the same order (recovered).
chart: {kind: stacked_bar, x: method, stack: [succeeded, failed, refunded, pending], title: Payment outcomes by method}
---*/
-- Filters of the live pages (dw reports serve), applied to this query's result.
-- filter: currency choice
WITH attempts AS (
    SELECT
        p.client,
        p.order_id,
        p.method,
        p.currency,
        p.status,
        p.amount,
        -- Was any earlier attempt on the same order a failure? (retries that then succeed are "recovered")
        coalesce(bool_or(p.status = 'failed') OVER (
            PARTITION BY p.client, p.order_id ORDER BY p.created_at, p.payment_id
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ), false) AS failed_before
    FROM payments AS p
    -- Payments of orders the lake does not know (yet) are left out rather than counted without context.
    JOIN orders AS o ON o.client = p.client AND o.order_id = p.order_id
),
outcomes AS (
    SELECT
        method,
        currency,
        count(*) AS payments,
        count(*) FILTER (WHERE status = 'captured') AS succeeded,
        count(*) FILTER (WHERE status = 'failed') AS failed,
        count(*) FILTER (WHERE status = 'refunded') AS refunded,
        count(*) FILTER (WHERE status = 'authorized') AS pending,
        coalesce(sum(amount) FILTER (WHERE status = 'captured'), 0) AS captured_amount,
        coalesce(sum(amount) FILTER (WHERE status = 'refunded'), 0) AS refunded_amount,
        count(*) FILTER (WHERE status IN ('captured', 'refunded') AND failed_before) AS recovered
    FROM attempts
    GROUP BY method, currency
)
SELECT
    method,
    currency,
    payments,
    succeeded,
    failed,
    refunded,
    pending,
    captured_amount,
    refunded_amount,
    recovered,
    -- Shares in DOUBLE, spelled out: DuckDB divides in DOUBLE, Spark in DECIMAL; both engines must agree.
    round(100.0 * CAST(succeeded + refunded AS DOUBLE) / nullif(succeeded + refunded + failed, 0), 2)
        AS success_rate_pct,
    round(100.0 * CAST(refunded AS DOUBLE) / nullif(succeeded + refunded, 0), 2) AS refund_rate_pct,
    round(100.0 * CAST(payments AS DOUBLE) / sum(payments) OVER (), 2) AS share_of_payments_pct
FROM outcomes
ORDER BY method, currency
