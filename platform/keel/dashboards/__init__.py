"""Dashboards: pages of widgets (KPI cards, tables, charts, trees, the relation graph) defined in
`dashboards/<id>.json`. This package registers the definition kind; rendering comes with the dashboards
work (Dash inside Flask)."""
