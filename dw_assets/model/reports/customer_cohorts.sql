/*---
title: Customer cohorts
description: >
  Customers grouped by the month of their first billable order (paid, shipped or delivered); for each later
  month, how many of them ordered again (active customers), their orders, and retention as a share of the
  cohort. Month 0 is the cohort month itself (retention 100 %).
chart: {kind: heatmap, x: months_since_first, y: cohort_month, value: retention_pct, title: Retention by cohort (% of cohort active)}
preview: {sort: [[cohort_month, descending], [months_since_first, ascending]], rows: 400}
---*/
-- Filters of the live pages (dw reports serve), applied to this query's result.
-- filter: cohort_month date_range
WITH billable AS (
    SELECT
        o.client,
        o.customer_id,
        o.order_id,
        CAST(date_trunc('month', o.ordered_at) AS DATE) AS order_month
    FROM orders AS o
    -- Only orders of known customers: an order whose customer row is missing cannot be placed in a cohort.
    JOIN customers AS c ON c.client = o.client AND c.customer_id = o.customer_id
    WHERE o.status IN ('paid', 'shipped', 'delivered')
),
with_cohort AS (
    SELECT
        b.*,
        min(b.order_month) OVER (PARTITION BY b.client, b.customer_id) AS cohort_month
    FROM billable AS b
),
activity AS (
    SELECT
        cohort_month,
        -- Month arithmetic rather than date_diff('month', ...), whose meaning differs between SQL engines.
        CAST((year(order_month) - year(cohort_month)) * 12 + month(order_month) - month(cohort_month) AS INTEGER)
            AS months_since_first,
        count(DISTINCT (client, customer_id)) AS active_customers,
        count(*) AS orders
    FROM with_cohort
    GROUP BY 1, 2
),
cohort_sizes AS (
    SELECT cohort_month, active_customers AS cohort_size
    FROM activity
    WHERE months_since_first = 0
)
SELECT
    a.cohort_month,
    s.cohort_size,
    a.months_since_first,
    a.active_customers,
    a.orders,
    round(100.0 * CAST(a.active_customers AS DOUBLE) / s.cohort_size, 2) AS retention_pct
FROM activity AS a
JOIN cohort_sizes AS s ON s.cohort_month = a.cohort_month
ORDER BY a.cohort_month, a.months_since_first
