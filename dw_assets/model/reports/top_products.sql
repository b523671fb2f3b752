/*---
title: Top products
description: >
  The ten products with the highest revenue (sum of line totals of billable orders: paid, shipped or delivered)
  per order currency, with units, order lines, their share of that currency's product revenue and the
  cumulative share down the ranking. Products are per client: across clients each (client, product) ranks on
  its own.
chart: {kind: barh, label: [client, product_name], value: revenue, facet: currency, limit: 10, title: Top products by revenue (largest currency)}
---*/
-- Filters of the live pages (dw reports serve), applied to this query's result.
-- filter: currency choice
WITH billable_lines AS (
    SELECT i.client, i.product_id, o.currency, i.quantity, i.line_total
    FROM order_items AS i
    JOIN orders AS o ON o.client = i.client AND o.order_id = i.order_id
    WHERE o.status IN ('paid', 'shipped', 'delivered')
),
by_product AS (
    SELECT
        l.client,
        l.product_id,
        p.product_name,
        p.category,
        l.currency,
        CAST(sum(l.quantity) AS BIGINT) AS units,
        count(*) AS order_lines,
        sum(l.line_total) AS revenue
    FROM billable_lines AS l
    JOIN products AS p ON p.client = l.client AND p.product_id = l.product_id
    GROUP BY l.client, l.product_id, p.product_name, p.category, l.currency
),
ranked AS (
    SELECT
        *,
        -- The key breaks revenue ties so ranks and cumulative shares are deterministic.
        row_number() OVER (PARTITION BY currency ORDER BY revenue DESC, client, product_id) AS revenue_rank,
        -- Shares in DOUBLE, spelled out: DuckDB divides decimals in DOUBLE, Spark in DECIMAL.
        CAST(100.0 * revenue AS DOUBLE) / CAST(sum(revenue) OVER (PARTITION BY currency) AS DOUBLE) AS share_pct,
        CAST(100.0 * sum(revenue) OVER (PARTITION BY currency ORDER BY revenue DESC, client, product_id
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS DOUBLE)
            / CAST(sum(revenue) OVER (PARTITION BY currency) AS DOUBLE) AS cumulative_share_pct
    FROM by_product
)
SELECT
    currency,
    revenue_rank,
    client,
    product_id,
    product_name,
    category,
    units,
    order_lines,
    revenue,
    round(share_pct, 2) AS share_pct,
    round(cumulative_share_pct, 2) AS cumulative_share_pct
FROM ranked
WHERE revenue_rank <= 10
ORDER BY currency, revenue_rank
