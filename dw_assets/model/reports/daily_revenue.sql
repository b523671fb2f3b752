/*---
title: Daily revenue
description: >
  Net revenue (order total minus discount), orders, units, average order value, customers and new customers
  per order day and currency, over billable orders (paid, shipped or delivered); with a 7-day rolling and a
  cumulative revenue per currency. A new customer is one whose first billable order falls on that day.
chart: {kind: line, x: order_date, y: revenue_7d, series: currency, max_series: 4, title: 7-day rolling revenue by currency}
preview: {sort: [[order_date, descending], [currency, ascending]], rows: 150}
---*/
-- Filters of the live pages (dw reports serve), applied to this query's result.
-- filter: order_date date_range
-- filter: currency choice
WITH billable AS (
    SELECT
        o.client,
        o.order_id,
        o.customer_id,
        o.currency,
        CAST(o.ordered_at AS DATE) AS order_date,
        o.total_amount - o.discount_amount AS net_amount,
        -- Ties on the timestamp are broken by the key so that every run marks the same first order.
        row_number() OVER (PARTITION BY o.client, o.customer_id ORDER BY o.ordered_at, o.order_id) = 1
            AS is_first_order
    FROM orders AS o
    WHERE o.status IN ('paid', 'shipped', 'delivered')
),
order_units AS (
    SELECT i.client, i.order_id, CAST(sum(i.quantity) AS BIGINT) AS units
    FROM order_items AS i
    GROUP BY i.client, i.order_id
),
daily AS (
    SELECT
        b.order_date,
        b.currency,
        count(*) AS orders,
        sum(b.net_amount) AS revenue,
        CAST(coalesce(sum(u.units), 0) AS BIGINT) AS units,
        -- Customer keys are per client: count (client, customer) pairs so the portfolio adds up.
        count(DISTINCT (b.client, b.customer_id)) AS customers,
        count(*) FILTER (WHERE b.is_first_order) AS new_customers
    FROM billable AS b
    LEFT JOIN order_units AS u ON u.client = b.client AND u.order_id = b.order_id
    GROUP BY b.order_date, b.currency
)
SELECT
    order_date,
    currency,
    orders,
    revenue,
    -- DOUBLE spelled out: DuckDB divides decimals in DOUBLE, Spark in DECIMAL; both engines must agree.
    CAST(CAST(revenue AS DOUBLE) / orders AS DECIMAL(14, 2)) AS avg_order_value,
    units,
    customers,
    new_customers,
    -- The frame is over a day number: Sail 0.7 widens an INTERVAL range frame over dates.
    sum(revenue) OVER (
        PARTITION BY currency ORDER BY date_diff('day', DATE '1970-01-01', order_date)
        RANGE BETWEEN 6 PRECEDING AND CURRENT ROW
    ) AS revenue_7d,
    sum(revenue) OVER (PARTITION BY currency ORDER BY order_date) AS revenue_cumulative
FROM daily
ORDER BY order_date, currency
