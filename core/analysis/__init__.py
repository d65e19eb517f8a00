"""Numbers computed from what the models heard: metrics, alerts and their rules, volatility,
fusion of voice and words, categories, prosody facts, aggregates and scorecards. Pure numpy and
pandas over frames handed in; imports base only, never the store."""
