"""The look every Plotly figure shares: the dashboards, budgets, incidents and advisor charts."""

FONT = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica Neue, Arial, sans-serif"
GRID = "#e2e5eb"
