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
        CAST(round(s.price * s.seats / CASE s.plan WHEN 'monthly' THEN 1 WHEN 'quarterly' THEN 3 ELSE 12 END, 2)
             AS DECIMAL(18, 2)) AS mrr,
        CAST(date_trunc('month', s.started_on) AS DATE) AS start_month,
        CAST(date_trunc('month', s.cancelled_at) AS DATE) AS churn_month
    FROM subscriptions AS s
    JOIN products AS p ON p.client = s.client AND p.product_id = s.product_id
    WHERE s.status <> 'trialing'
      AND (s.cancelled_at IS NULL OR s.cancelled_at >= s.started_on)
),
bounds AS (
    SELECT min(start_month) AS first_month, max(greatest(start_month, coalesce(churn_month, start_month))) AS last_month
    FROM paying
),
months AS (
    SELECT CAST(unnest(range(CAST(first_month AS TIMESTAMP), CAST(last_month AS TIMESTAMP) + INTERVAL 1 MONTH,
                             INTERVAL 1 MONTH)) AS DATE) AS month
    FROM bounds
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
    round(100.0 * churned_subscriptions / nullif(lag(active_subscriptions) OVER w, 0), 2) AS churn_rate_pct
FROM monthly
WINDOW w AS (PARTITION BY currency ORDER BY month)
ORDER BY month, currency
