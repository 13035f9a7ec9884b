"""Running Tidebase: the workflow registry, queues, schedules, workers, the reconciler, webhooks and the read-only
insights the Studio shows; plus the public forms of rows and the log setup the commands use."""
