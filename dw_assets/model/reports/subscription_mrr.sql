/*---
title: Subscription MRR and churn
description: >
  Monthly recurring revenue per month and currency (the product's currency): each paying subscription
  contributes price × seats spread over its plan's months (monthly 1, quarterly 3, annual 12), rounded to cents.
  A subscription counts from the month it started until the month it was cancelled (exclusive); trialing
  subscriptions do not pay and are left out, as are cancellations dated before the start. New and churned MRR,
  the previous month's MRR, and churn rate = churned subscriptions / subscriptions active at the end of the
  previous month.
chart: {kind: line, x: month, y: mrr, series: currency, max_series: 4, title: MRR by currency}
preview: {sort: [[month, descending], [currency, ascending]], rows: 150}
---*/
-- Filters of the live pages (dw reports serve), applied to this query's result.
-- filter: month date_range
-- filter: currency choice
WITH paying AS (
    SELECT
        s.client,
        s.subscription_id,
        p.currency,
        -- DOUBLE spelled out: DuckDB divides decimals in DOUBLE, Spark in DECIMAL; both engines must agree.
        CAST(round(CAST(s.price * s.seats AS DOUBLE)
                   / CASE s.plan WHEN 'monthly' THEN 1 WHEN 'quarterly' THEN 3 ELSE 12 END, 2)
             AS DECIMAL(18, 2)) AS mrr,
        CAST(date_trunc('month', s.started_on) AS DATE) AS start_month,
        CAST(date_trunc('month', s.cancelled_at) AS DATE) AS churn_month
    FROM subscriptions AS s
    JOIN products AS p ON p.client = s.client AND p.product_id = s.product_id
    WHERE s.status <> 'trialing'
      AND (s.cancelled_at IS NULL OR s.cancelled_at >= s.started_on)
),
bounds AS (
    -- Months numbered year * 12 + month - 1, so the series is integer arithmetic every SQL engine shares.
    SELECT
        min(year(start_month) * 12 + month(start_month) - 1) AS first_month,
        max(year(greatest(start_month, coalesce(churn_month, start_month))) * 12
            + month(greatest(start_month, coalesce(churn_month, start_month))) - 1) AS last_month
    FROM paying
),
digits AS (
    SELECT n FROM (VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)) AS d(n)
),
months AS (
    -- Up to 10,000 months (833 years) from the first: DuckDB's range() and Spark's sequence() share no name.
    SELECT make_date(CAST(floor(m / 12) AS INTEGER), CAST(m % 12 AS INTEGER) + 1, 1) AS month
    FROM (
        SELECT b.first_month + d0.n + 10 * d1.n + 100 * d2.n + 1000 * d3.n AS m, b.last_month
        FROM bounds AS b, digits AS d0, digits AS d1, digits AS d2, digits AS d3
    ) AS series
    WHERE m <= last_month
),
monthly AS (
    SELECT
        m.month,
        s.currency,
        count(*) FILTER (WHERE s.churn_month IS NULL OR s.churn_month > m.month) AS active_subscriptions,
        coalesce(sum(s.mrr) FILTER (WHERE s.churn_month IS NULL OR s.churn_month > m.month), 0) AS mrr,
        coalesce(sum(s.mrr) FILTER (WHERE s.start_month = m.month), 0) AS new_mrr,
        coalesce(sum(s.mrr) FILTER (WHERE s.churn_month = m.month), 0) AS churned_mrr,
        count(*) FILTER (WHERE s.churn_month = m.month) AS churned_subscriptions
    FROM months AS m
    -- Every subscription alive at some point of the month: active through it, or churning in it.
    JOIN paying AS s ON s.start_month <= m.month AND (s.churn_month IS NULL OR s.churn_month >= m.month)
    GROUP BY m.month, s.currency
)
SELECT
    month,
    currency,
    active_subscriptions,
    mrr,
    new_mrr,
    churned_mrr,
    churned_subscriptions,
    lag(mrr) OVER w AS mrr_previous_month,
    round(100.0 * CAST(churned_subscriptions AS DOUBLE) / nullif(lag(active_subscriptions) OVER w, 0), 2)
        AS churn_rate_pct
FROM monthly
WINDOW w AS (PARTITION BY currency ORDER BY month)
ORDER BY month, currency
