"""The scheduler: jobs on cron, interval, one-off and bus-event triggers, persisted in the store."""
