"""Goal Agility's measures: the monthly snapshot and red flags, market signals, the alignment index, the pulse
survey and the effect panel (docs/goal-agility-measures.md).

    plugin.py     hook implementations: the job type, the routes and page, the demo history
    job.py        the `goal_agility.snapshot` job type (plan: inputs, signals, id ranges; chunks: snapshot.take)
    snapshot.py   the set-based snapshot of a range of goals (INSERT ... SELECT, UPDATE ... FROM)
    periods.py    "YYYY-MM" periods, finished months, pacing (linear, monthly weights)
    inputs.py     CRM actuals and finance forecasts from their connectors, matched to goals or reported
    signals.py    the month's hot words and competitor actions; the company's terms
    text.py       jieba: segmentation with a user dictionary, hot words, keyword mentions
    alignment.py  the goal alignment index and its components
    effect.py     the before/after panel of a change date
    org.py        departments, sub-departments, head counts from the org directory
    tables.py     the measures' own tables (immutable snapshots, signals, staged inputs)
    api.py        REST under /api/v1/apps/goal_agility/measures/
    pages.py      the page /apps/goal_agility/measures
    demo.py       the case's history for `keel demo`
    generate.py   a generated company for the benchmark and scale tests
"""
